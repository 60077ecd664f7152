package pyenv

import (
	"errors"
	"reflect"
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	cases := []struct {
		name    string
		tool    string
		in      any
		want    Spec
		wantErr string
	}{
		{"list", Pip, []any{"six==1.16.0", " requests ", "six==1.16.0", ""},
			Spec{Tool: Pip, Packages: []string{"six==1.16.0", "requests"}}, ""},
		{"go strings", UV, []string{"six"}, Spec{Tool: UV, Packages: []string{"six"}}, ""},
		{"dict", Pip, map[string]any{"packages": []any{"six"}, "pip_check": true, "pip_version": "==23.3.1"},
			Spec{Tool: Pip, Packages: []string{"six"}, Check: true, Version: "==23.3.1"}, ""},
		{"default options are no options", Pip,
			map[string]any{"packages": []any{"six"}, "pip_install_options": []any{"--disable-pip-version-check", "--no-cache-dir"}},
			Spec{Tool: Pip, Packages: []string{"six"}}, ""},
		{"uv as Ray's validation writes it", UV,
			map[string]any{"packages": []any{"six"}, "uv_check": false, "uv_pip_install_options": []any{"--no-cache"}},
			Spec{Tool: UV, Packages: []string{"six"}}, ""},
		{"options keep repeats", UV, map[string]any{"packages": []any{"six"}, "uv_pip_install_options": []any{"-i", "a", "--extra-index-url", "a"}},
			Spec{Tool: UV, Packages: []string{"six"}, Options: []string{"-i", "a", "--extra-index-url", "a"}}, ""},
		{"empty options are kept", Pip, map[string]any{"packages": []any{"six"}, "pip_install_options": []any{}},
			Spec{Tool: Pip, Packages: []string{"six"}, Options: []string{}}, ""},
		{"no packages is no env", Pip, []any{}, Spec{}, ""},
		{"nil", Pip, nil, Spec{}, ""},
		{"requirements path", Pip, "requirements.txt", Spec{}, "requirements file path"},
		{"unknown dict key", Pip, map[string]any{"packages": []any{"six"}, "uv_check": true}, Spec{}, "can only have these fields"},
		{"dict without packages", UV, map[string]any{"uv_check": true}, Spec{}, "must include field 'packages'"},
		{"bad check", Pip, map[string]any{"packages": []any{"six"}, "pip_check": "yes"}, Spec{}, "must be of type bool"},
		{"bad version", UV, map[string]any{"packages": []any{"six"}, "uv_version": 3}, Spec{}, "must be of type str"},
		{"not strings", Pip, []any{"six", 3}, Spec{}, "list[str]"},
		{"line break", Pip, []any{"six\n--index-url x"}, Spec{}, "line break"},
		{"wrong type", Pip, 12, Spec{}, "list[str] or dict"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := Parse(c.tool, c.in)
			if c.wantErr != "" {
				if err == nil || !errors.Is(err, ErrSpec) || !strings.Contains(err.Error(), c.wantErr) {
					t.Fatalf("err = %v, want ErrSpec with %q", err, c.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, c.want) {
				t.Fatalf("got %#v, want %#v", got, c.want)
			}
		})
	}
}

func TestFromRuntimeEnv(t *testing.T) {
	if _, err := FromRuntimeEnv([]any{"six"}, []any{"six"}); !errors.Is(err, ErrSpec) || !strings.Contains(err.Error(), "cannot both be specified") {
		t.Fatalf("pip and uv together: err = %v", err)
	}
	got, err := FromRuntimeEnv(nil, []any{"six"})
	if err != nil || got.Tool != UV {
		t.Fatalf("uv: %#v, %v", got, err)
	}
	got, err = FromRuntimeEnv(nil, nil)
	if err != nil || !got.IsZero() {
		t.Fatalf("neither: %#v, %v", got, err)
	}
}

func TestHashAndEncode(t *testing.T) {
	a := Spec{Tool: Pip, Packages: []string{"six==1.16.0"}}
	same, _ := Parse(Pip, map[string]any{"packages": []any{"six==1.16.0"}, "pip_check": false})
	distinct := []Spec{
		{Tool: UV, Packages: []string{"six==1.16.0"}},
		{Tool: Pip, Packages: []string{"six==1.15.0"}},
		{Tool: Pip, Packages: []string{"six==1.16.0"}, Check: true},
		{Tool: Pip, Packages: []string{"six==1.16.0"}, Options: []string{}},
	}
	if a.Hash("/py", "3.11") != same.Hash("/py", "3.11") {
		t.Fatal("the same env in two spellings hashes apart")
	}
	if a.Hash("/py", "3.11") == a.Hash("/py2", "3.11") || a.Hash("/py", "3.11") == a.Hash("/py", "3.12") {
		t.Fatal("the interpreter is not in the hash")
	}
	for _, d := range distinct {
		if d.Hash("/py", "3.11") == a.Hash("/py", "3.11") {
			t.Fatalf("%#v hashes as %#v", d, a)
		}
		back, err := Decode(d.Encode())
		if err != nil || !reflect.DeepEqual(back, d) {
			t.Fatalf("round trip of %#v: %#v, %v", d, back, err)
		}
	}
	if (Spec{}).Encode() != "" {
		t.Fatal("the zero spec encodes to something")
	}
	if z, err := Decode(""); err != nil || !z.IsZero() {
		t.Fatalf("decode empty: %#v %v", z, err)
	}
	if _, err := Decode(`{"tool":"conda","packages":["x"]}`); !errors.Is(err, ErrSpec) {
		t.Fatalf("decode unknown tool: %v", err)
	}
}
