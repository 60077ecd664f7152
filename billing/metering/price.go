// Package metering turns a raylet's resource leases into signed usage records
// and prices them.
//
// It is pure: no I/O, no clocks, no global state. Every function that needs
// the time takes it as an argument. The pieces are:
//
//   - PriceList: a provider's prices in micro-USD per resource-hour.
//   - UsageRecord: "node N held Amount of Resource for lease L of job J from
//     Start to End", with a deterministic Cost.
//   - Sign / Verify: ed25519 signatures over a canonical binary encoding of a
//     record (see UsageRecord.CanonicalBytes).
//   - Verifier: the head-side gate that accepts each record at most once,
//     only from a known node that held the lease.
//   - Meter: the raylet-side bookkeeping that cuts records when leases are
//     released, and periodically for long-running leases (Flush).
package metering

import (
	"errors"
	"fmt"
	"strings"
)

// Errors returned by this package. They are always wrapped with detail; test
// with errors.Is.
var (
	// ErrBadPrice: a price is negative, absurd (> MaxMicroUSDPerHour), has
	// no resource name, or is listed twice.
	ErrBadPrice = errors.New("metering: bad price")
	// ErrNoPrice: the price list has no price for a record's resource.
	ErrNoPrice = errors.New("metering: no price for resource")
	// ErrOverflow: a cost does not fit in an int64 of micro-USD.
	ErrOverflow = errors.New("metering: cost overflows int64")
)

// MaxMicroUSDPerHour is the largest accepted price: one million USD per
// resource-hour. Anything above it is a typo or an attack.
const MaxMicroUSDPerHour int64 = 1_000_000_000_000

// Price is what a provider charges for one unit of Resource for one hour, in
// micro-USD (1 USD = 1_000_000). For "memory" the unit is one GiB.
type Price struct {
	Resource        string `json:"resource"`
	MicroUSDPerHour int64  `json:"micro_usd_per_hour"`
}

// PriceList is a provider's price list. Resource names are Ray's ("CPU",
// "GPU", "memory" in GiB) plus class-specific entries "BASE:CLASS" such as
// "GPU:H100". A record for "GPU:H100" uses the "GPU:H100" price when listed,
// otherwise the "GPU" price (see Lookup).
type PriceList []Price

// Validate checks every price: a non-empty resource name, listed once, with
// 0 <= MicroUSDPerHour <= MaxMicroUSDPerHour. Errors wrap ErrBadPrice.
func (pl PriceList) Validate() error {
	seen := make(map[string]bool, len(pl))
	for _, p := range pl {
		switch {
		case p.Resource == "" || strings.TrimSpace(p.Resource) != p.Resource:
			return fmt.Errorf("%w: resource name %q", ErrBadPrice, p.Resource)
		case seen[p.Resource]:
			return fmt.Errorf("%w: %q listed twice", ErrBadPrice, p.Resource)
		case p.MicroUSDPerHour < 0:
			return fmt.Errorf("%w: %q costs %d micro-USD/hour (negative)", ErrBadPrice, p.Resource, p.MicroUSDPerHour)
		case p.MicroUSDPerHour > MaxMicroUSDPerHour:
			return fmt.Errorf("%w: %q costs %d micro-USD/hour (above the %d limit)",
				ErrBadPrice, p.Resource, p.MicroUSDPerHour, MaxMicroUSDPerHour)
		}
		seen[p.Resource] = true
	}
	return nil
}

// Lookup returns the price per unit-hour of resource. An exact entry wins; a
// resource "BASE:CLASS" with no entry of its own falls back to "BASE". The
// list must be valid; an invalid list returns an error wrapping ErrBadPrice,
// and a missing price an error wrapping ErrNoPrice.
func (pl PriceList) Lookup(resource string) (int64, error) {
	if err := pl.Validate(); err != nil {
		return 0, err
	}
	if p, ok := pl.find(resource); ok {
		return p, nil
	}
	if base, _, ok := strings.Cut(resource, ":"); ok {
		if p, ok := pl.find(base); ok {
			return p, nil
		}
	}
	return 0, fmt.Errorf("%w: %q", ErrNoPrice, resource)
}

func (pl PriceList) find(resource string) (int64, bool) {
	for _, p := range pl {
		if p.Resource == resource {
			return p.MicroUSDPerHour, true
		}
	}
	return 0, false
}
