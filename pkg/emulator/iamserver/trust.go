package iamserver

import (
	"strings"

	"github.com/cosmount/cosmount/pkg/emulator/config"
)

// findProfile selects the profile named by the request. Every selector the
// request sets must name the same profile.
func findProfile(cfg *config.Config, id, name, crn string) *config.Profile {
	for i := range cfg.Profiles {
		p := &cfg.Profiles[i]
		if (id == "" || p.ID == id) && (name == "" || p.Name == name) && (crn == "" || p.CRN == crn) {
			return p
		}
	}
	return nil
}

// eligible reports whether the token's bearer may use the profile: through
// a link naming its cluster, namespace and service account, or a claim rule
// whose every condition holds.
func eligible(p *config.Profile, id *crIdentity) bool {
	for _, l := range p.Links {
		if linkMatches(l, id) {
			return true
		}
	}
	for _, r := range p.Rules {
		if ruleMatches(r, id) {
			return true
		}
	}
	return false
}

func linkMatches(l config.Link, id *crIdentity) bool {
	// The token does not say whether the cluster is IKS or ROKS, so the
	// link's crType cannot be checked against it; only its value is validated.
	cluster := l.Cluster == id.issuer.Cluster || (id.issuer.ClusterCRN != "" && l.Cluster == id.issuer.ClusterCRN)
	return cluster && l.Namespace == id.namespace && l.ServiceAccount == id.serviceAccount
}

func ruleMatches(r config.Rule, id *crIdentity) bool {
	if len(r.Conditions) == 0 {
		return false // never trust everybody by accident
	}
	for _, c := range r.Conditions {
		if !conditionHolds(c, claimValue(c.Claim, id)) {
			return false
		}
	}
	return true
}

func claimValue(claim string, id *crIdentity) string {
	switch claim {
	case "service_instance":
		return id.issuer.Cluster
	case "namespace":
		return id.namespace
	case "name":
		return id.serviceAccount
	case "pod":
		return id.pod
	case "resource_group_id":
		return id.issuer.ResourceGroupID
	case "resource_group_name":
		return id.issuer.ResourceGroupName
	case "location":
		return id.issuer.Location
	}
	return ""
}

func conditionHolds(c config.Condition, v string) bool {
	switch c.Operator {
	case "EQUALS":
		return v == c.Value
	case "NOT_EQUALS":
		return v != c.Value
	case "EQUALS_IGNORE_CASE":
		return strings.EqualFold(v, c.Value)
	case "NOT_EQUALS_IGNORE_CASE":
		return !strings.EqualFold(v, c.Value)
	case "CONTAINS":
		return strings.Contains(v, c.Value)
	case "IN":
		for _, want := range strings.Split(c.Value, ",") {
			if strings.TrimSpace(want) == v {
				return true
			}
		}
		return false
	}
	return false // unknown operators are rejected by checkTrust
}
