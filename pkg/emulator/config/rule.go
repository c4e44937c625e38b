package config

import "slices"

// AccessRule is IBM Cloud's attribute-based condition on a COS access
// policy ("fine-grained access control"), in the shape IBM documents for a
// bucket resource: the policy applies when one of its clauses holds,
//
//	(prefix stringMatch Prefix AND delimiter stringEqualsAnyOf Delimiters)
//	OR path stringMatch Path
//	OR (path, prefix and delimiter stringExists false)   -- BucketActions
//
// where path is the object key of operations on one object, prefix and
// delimiter are those of listings, and bucket-level operations (HEAD
// bucket, its location) carry none of them. An empty Path or Prefix leaves
// its clause out; no Delimiters means any delimiter. Patterns take IBM's
// wildcards: '*' any run of characters, '?' one character.
type AccessRule struct {
	Path       string   `json:"path,omitempty"`
	Prefix     string   `json:"prefix,omitempty"`
	Delimiters []string `json:"delimiters,omitempty"`
	// BucketActions grants the role's actions that carry no path, prefix or
	// delimiter (the stringExists=false clause).
	BucketActions bool `json:"bucketActions,omitempty"`
}

// Resource is what a request shows of its target to conditions. Object
// operations set Path, listings set Prefix (an empty prefix is still a
// prefix: listing a bucket's root is a listing) and Delimiter when one was
// sent; bucket-level operations set nothing.
type Resource struct {
	Path      *string
	Prefix    *string
	Delimiter *string
}

// ObjectResource is the resource of an operation on key.
func ObjectResource(key string) Resource { return Resource{Path: &key} }

// ListResource is the resource of a listing.
func ListResource(prefix string, delimiter *string) Resource {
	return Resource{Prefix: &prefix, Delimiter: delimiter}
}

func (r *AccessRule) matches(res Resource) bool {
	switch {
	case res.Path != nil:
		return r.Path != "" && wildcardMatch(r.Path, *res.Path)
	case res.Prefix != nil:
		if r.Prefix == "" || !wildcardMatch(r.Prefix, *res.Prefix) {
			return false
		}
		if len(r.Delimiters) == 0 {
			return true
		}
		d := ""
		if res.Delimiter != nil {
			d = *res.Delimiter
		}
		return slices.Contains(r.Delimiters, d)
	default:
		return r.BucketActions
	}
}

// wildcardMatch matches s against pattern, '*' standing for any run of
// characters and '?' for one.
func wildcardMatch(pattern, s string) bool {
	p, i := 0, 0
	star, mark := -1, 0
	for i < len(s) {
		switch {
		case p < len(pattern) && (pattern[p] == '?' || pattern[p] == s[i]):
			p++
			i++
		case p < len(pattern) && pattern[p] == '*':
			star, mark = p, i
			p++
		case star >= 0:
			p = star + 1
			mark++
			i = mark
		default:
			return false
		}
	}
	for p < len(pattern) && pattern[p] == '*' {
		p++
	}
	return p == len(pattern)
}
