// Package pyenv builds the Python environments of runtime_env's "pip" and
// "uv" fields, as Ray's pip and uv plugins do: a virtual environment layered
// on the node's interpreter (whose packages, ray among them, stay
// importable behind the env's own), then `pip install` or `uv pip install`
// of the requested requirements into it.
//
// Environments are cached per node under a root directory, one directory
// per content hash of the normalised spec and the base interpreter. A
// Builder builds each one once, even when many leases want it at the same
// time (in-process single flight, and a lock file across processes); a
// failed build is removed, never cached as good.
//
// Spec parsing (Parse, FromRuntimeEnv) is pure; Builder does the I/O.
package pyenv

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
)

// Sentinel errors.
var (
	// ErrSpec is a pip/uv field Ray would refuse, or one gray cannot set up.
	ErrSpec = errors.New("runtime_env python env")
	// ErrBuild is an environment whose build failed (pip's output follows).
	ErrBuild = errors.New("runtime_env python env build failed")
)

// Tools.
const (
	Pip = "pip"
	UV  = "uv"
)

// Default install options, as Ray's plugins use when none are given.
var (
	defaultPipOptions = []string{"--disable-pip-version-check", "--no-cache-dir"}
	defaultUVOptions  = []string{"--no-cache"}
)

// Spec is a normalised pip or uv field. The zero Spec is no environment.
type Spec struct {
	Tool     string   `json:"tool,omitempty"`
	Packages []string `json:"packages,omitempty"`
	// Check runs `pip check` (pip_check, uv_check) after the install.
	Check bool `json:"check,omitempty"`
	// Version is pip_version / uv_version: a specifier appended to the
	// tool's name ("==23.3.1") and installed into the env first.
	Version string `json:"version,omitempty"`
	// Options are pip_install_options / uv_pip_install_options (nil: the
	// tool's defaults).
	Options []string `json:"options"`
}

// IsZero reports whether s asks for no environment.
func (s Spec) IsZero() bool { return s.Tool == "" || len(s.Packages) == 0 }

// InstallOptions are the options passed to the install command.
func (s Spec) InstallOptions() []string {
	if s.Options != nil {
		return s.Options
	}
	if s.Tool == UV {
		return defaultUVOptions
	}
	return defaultPipOptions
}

// Encode is s's canonical JSON ("" for the zero Spec): what travels in
// task specs and what the cache hashes.
func (s Spec) Encode() string {
	if s.IsZero() {
		return ""
	}
	b, _ := json.Marshal(s)
	return string(b)
}

// Decode reads what Encode wrote.
func Decode(s string) (Spec, error) {
	if s == "" {
		return Spec{}, nil
	}
	var sp Spec
	if err := json.Unmarshal([]byte(s), &sp); err != nil {
		return Spec{}, fmt.Errorf("%w: %v", ErrSpec, err)
	}
	if sp.Tool != Pip && sp.Tool != UV {
		return Spec{}, fmt.Errorf("%w: unknown tool %q", ErrSpec, sp.Tool)
	}
	return sp, nil
}

// Hash is the cache key of s built on the interpreter python (its
// executable path and version).
func (s Spec) Hash(python, version string) string {
	h := sha256.New()
	h.Write([]byte(s.Encode()))
	h.Write([]byte{0})
	h.Write([]byte(python))
	h.Write([]byte{0})
	h.Write([]byte(version))
	return hex.EncodeToString(h.Sum(nil))[:24]
}

// FromRuntimeEnv reads the pip and uv fields of a runtime_env (decoded
// values; nil for absent). Setting both is an error, as in Ray.
func FromRuntimeEnv(pip, uv any) (Spec, error) {
	if pip != nil && uv != nil {
		return Spec{}, fmt.Errorf("%w: the 'pip' field and 'uv' field cannot both be specified; use one of them", ErrSpec)
	}
	if uv != nil {
		return Parse(UV, uv)
	}
	if pip != nil {
		return Parse(Pip, pip)
	}
	return Spec{}, nil
}

// fieldNames are the dict keys Ray accepts for each tool: check, version, options.
var fieldNames = map[string][3]string{
	Pip: {"pip_check", "pip_version", "pip_install_options"},
	UV:  {"uv_check", "uv_version", "uv_pip_install_options"},
}

// Parse normalises runtime_env[tool] in the forms Ray accepts: a list of
// requirement strings, or a dict with "packages" and the tool's check,
// version and install-options keys. A string (a requirements.txt path) is
// read by the driver in Ray; it reaches the cluster only from clients that
// did not read it, and is refused here: the path is on the driver's machine.
// Packages are deduplicated in order; no packages is no environment.
func Parse(tool string, v any) (Spec, error) {
	names, ok := fieldNames[tool]
	if !ok {
		return Spec{}, fmt.Errorf("%w: unknown tool %q", ErrSpec, tool)
	}
	sp := Spec{Tool: tool}
	switch x := v.(type) {
	case nil:
		return Spec{}, nil
	case string:
		return Spec{}, fmt.Errorf("%w: runtime_env['%s'] is a requirements file path (%q): the driver must read it and send the list of requirements (pass the list, e.g. open(path).read().splitlines())",
			ErrSpec, tool, x)
	case []any, []string:
		pkgs, err := stringList(fmt.Sprintf("runtime_env['%s']", tool), x, true)
		if err != nil {
			return Spec{}, err
		}
		sp.Packages = pkgs
	case map[string]any:
		var extra []string
		for k := range x {
			if k != "packages" && k != names[0] && k != names[1] && k != names[2] {
				extra = append(extra, k)
			}
		}
		if len(extra) > 0 {
			sort.Strings(extra)
			return Spec{}, fmt.Errorf("%w: runtime_env['%s'] can only have these fields: packages, %s, %s and %s, but got: %s",
				ErrSpec, tool, names[0], names[1], names[2], strings.Join(extra, ", "))
		}
		raw, ok := x["packages"]
		if !ok {
			return Spec{}, fmt.Errorf("%w: runtime_env['%s'] must include field 'packages'", ErrSpec, tool)
		}
		pkgs, err := stringList(fmt.Sprintf("runtime_env['%s']['packages']", tool), raw, true)
		if err != nil {
			return Spec{}, err
		}
		sp.Packages = pkgs
		if c, ok := x[names[0]]; ok && c != nil {
			b, ok := c.(bool)
			if !ok {
				return Spec{}, fmt.Errorf("%w: runtime_env['%s']['%s'] must be of type bool, got %T", ErrSpec, tool, names[0], c)
			}
			sp.Check = b
		}
		if ver, ok := x[names[1]]; ok && ver != nil {
			s, ok := ver.(string)
			if !ok {
				return Spec{}, fmt.Errorf("%w: runtime_env['%s']['%s'] must be of type str, got %T", ErrSpec, tool, names[1], ver)
			}
			sp.Version = strings.TrimSpace(s)
		}
		if opts, ok := x[names[2]]; ok && opts != nil {
			list, err := stringList(fmt.Sprintf("runtime_env['%s']['%s']", tool, names[2]), opts, false)
			if err != nil {
				return Spec{}, err
			}
			sp.Options = list
			if sp.Options == nil {
				sp.Options = []string{}
			}
		}
	default:
		return Spec{}, fmt.Errorf("%w: runtime_env['%s'] must be of type list[str] or dict, got %T", ErrSpec, tool, v)
	}
	if sp.Options != nil && slices.Equal(sp.Options, sp.defaultOptions()) {
		sp.Options = nil // the defaults spelled out: the same env
	}
	if len(sp.Packages) == 0 {
		return Spec{}, nil
	}
	return sp, nil
}

func (s Spec) defaultOptions() []string {
	if s.Tool == UV {
		return defaultUVOptions
	}
	return defaultPipOptions
}

// stringList reads a list of strings, trimmed, without empty ones, and
// with dedupe without repeats (the first stays).
func stringList(what string, v any, dedupe bool) ([]string, error) {
	var items []any
	switch x := v.(type) {
	case []string:
		for _, s := range x {
			items = append(items, s)
		}
	case []any:
		items = x
	default:
		return nil, fmt.Errorf("%w: %s must be of type list[str], got %T", ErrSpec, what, v)
	}
	var out []string
	seen := map[string]bool{}
	for i, it := range items {
		s, ok := it.(string)
		if !ok {
			return nil, fmt.Errorf("%w: %s must be of type list[str], got %T for item %d", ErrSpec, what, it, i)
		}
		s = strings.TrimSpace(s)
		if s == "" || dedupe && seen[s] {
			continue
		}
		if strings.ContainsAny(s, "\n\r\x00") {
			return nil, fmt.Errorf("%w: %s item %d has a line break", ErrSpec, what, i)
		}
		seen[s] = true
		out = append(out, s)
	}
	return out, nil
}
