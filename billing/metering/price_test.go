package metering

import (
	"errors"
	"testing"
)

func TestPriceListValidate(t *testing.T) {
	tests := []struct {
		name string
		pl   PriceList
		want error
	}{
		{"empty", nil, nil},
		{"ok", PriceList{{"CPU", 10_000}, {"GPU", 2_000_000}, {"GPU:H100", 3_000_000}, {"memory", 500}}, nil},
		{"free", PriceList{{"CPU", 0}}, nil},
		{"max", PriceList{{"GPU", MaxMicroUSDPerHour}}, nil},
		{"negative", PriceList{{"CPU", -1}}, ErrBadPrice},
		{"absurd", PriceList{{"GPU", MaxMicroUSDPerHour + 1}}, ErrBadPrice},
		{"no name", PriceList{{"", 1}}, ErrBadPrice},
		{"padded name", PriceList{{" GPU", 1}}, ErrBadPrice},
		{"twice", PriceList{{"CPU", 1}, {"CPU", 2}}, ErrBadPrice},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.pl.Validate(); !errors.Is(err, tt.want) || (tt.want == nil) != (err == nil) {
				t.Fatalf("Validate() = %v, want %v", err, tt.want)
			}
		})
	}
}

func TestPriceListLookup(t *testing.T) {
	pl := PriceList{{"CPU", 10_000}, {"GPU", 2_000_000}, {"GPU:H100", 3_000_000}}
	tests := []struct {
		resource string
		want     int64
		err      error
	}{
		{"CPU", 10_000, nil},
		{"GPU", 2_000_000, nil},
		{"GPU:H100", 3_000_000, nil},
		{"GPU:A100", 2_000_000, nil}, // falls back to the base resource
		{"memory", 0, ErrNoPrice},
		{"TPU:v5", 0, ErrNoPrice},
	}
	for _, tt := range tests {
		got, err := pl.Lookup(tt.resource)
		if got != tt.want || !errors.Is(err, tt.err) || (tt.err == nil) != (err == nil) {
			t.Errorf("Lookup(%q) = %d, %v; want %d, %v", tt.resource, got, err, tt.want, tt.err)
		}
	}
	if _, err := (PriceList{{"CPU", -5}}).Lookup("CPU"); !errors.Is(err, ErrBadPrice) {
		t.Errorf("Lookup on an invalid list = %v, want ErrBadPrice", err)
	}
}
