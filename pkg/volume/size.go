package volume

import (
	"fmt"
	"strconv"
	"strings"
)

// Byte units.
const (
	KiB = int64(1) << 10
	MiB = int64(1) << 20
	GiB = int64(1) << 30
	TiB = int64(1) << 40
)

// sizeUnits are the suffixes ParseSize accepts, longest first so that "MiB"
// is not read as "B". Binary forms: KiB (and Kubernetes' Ki), K, k; decimal:
// kB, KB, MB, GB, TB.
var sizeUnits = []struct {
	suffix string
	mult   int64
}{
	{"KiB", KiB}, {"MiB", MiB}, {"GiB", GiB}, {"TiB", TiB},
	{"Ki", KiB}, {"Mi", MiB}, {"Gi", GiB}, {"Ti", TiB},
	{"kB", 1000}, {"KB", 1000}, {"MB", 1000 * 1000}, {"GB", 1000 * 1000 * 1000}, {"TB", 1000 * 1000 * 1000 * 1000},
	{"K", KiB}, {"k", KiB}, {"M", MiB}, {"G", GiB}, {"T", TiB}, {"B", 1},
}

// ParseSize parses a byte count: a non-negative integer with an optional
// unit, for example 4096, 512KiB, 16MiB, 16Mi (the Kubernetes spelling),
// 16M, 1GiB, 1TB (decimal) or 7B. Fractions and signs are refused.
func ParseSize(s string) (int64, error) {
	num := strings.TrimSpace(s)
	mult := int64(1)
	for _, u := range sizeUnits {
		if strings.HasSuffix(num, u.suffix) {
			num, mult = strings.TrimSpace(strings.TrimSuffix(num, u.suffix)), u.mult
			break
		}
	}
	if num == "" || strings.IndexFunc(num, func(r rune) bool { return r < '0' || r > '9' }) >= 0 {
		return 0, fmt.Errorf("%q is not a size such as 4096, 512KiB, 16MiB or 1GiB", s)
	}
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil || (n > 0 && mult > (1<<62)/n) {
		return 0, fmt.Errorf("size %q is out of range", s)
	}
	return n * mult, nil
}

// FormatSize renders n in the unit, binary or decimal, that divides it
// exactly with the smallest quotient, so that ParseSize(FormatSize(n)) == n
// and a size reads as it was probably written (16MiB, 1TB, not 16777216 or
// 976562500KiB).
func FormatSize(n int64) string {
	best, bestQ := "", n
	for _, u := range []struct {
		suffix string
		mult   int64
	}{
		{"TiB", TiB}, {"GiB", GiB}, {"MiB", MiB}, {"KiB", KiB},
		{"TB", 1000 * 1000 * 1000 * 1000}, {"GB", 1000 * 1000 * 1000}, {"MB", 1000 * 1000}, {"kB", 1000},
	} {
		if n != 0 && n%u.mult == 0 && n/u.mult < bestQ {
			best, bestQ = u.suffix, n/u.mult
		}
	}
	return strconv.FormatInt(bestQ, 10) + best
}
