package cosserver

import (
	"encoding/xml"
	"io"
	"net/http"
	"strings"
	"time"

	"k8s.io/klog/v2"

	"github.com/cosmount/cosmount/pkg/emulator/store"
)

// The bucket lifecycle configuration, as much of it as the emulator keeps:
// rules with a prefix filter, a status, AbortIncompleteMultipartUpload
// (applied, see applyLifecycle) and Expiration in days (kept, not applied).
type lifecycleConfiguration struct {
	XMLName xml.Name        `xml:"LifecycleConfiguration"`
	Rules   []lifecycleRule `xml:"Rule"`
}

type lifecycleRule struct {
	ID     string `xml:"ID,omitempty"`
	Prefix string `xml:"Prefix,omitempty"` // the legacy place of the filter
	Filter *struct {
		Prefix string `xml:"Prefix"`
	} `xml:"Filter,omitempty"`
	Status      string `xml:"Status"`
	AbortUpload *struct {
		DaysAfterInitiation int `xml:"DaysAfterInitiation"`
	} `xml:"AbortIncompleteMultipartUpload,omitempty"`
	Expiration *struct {
		Days int `xml:"Days"`
	} `xml:"Expiration,omitempty"`
}

// lifecycleOut is the GET answer.
type lifecycleOut struct {
	XMLName xml.Name           `xml:"http://s3.amazonaws.com/doc/2006-03-01/ LifecycleConfiguration"`
	Rules   []lifecycleRuleOut `xml:"Rule"`
}

type lifecycleRuleOut struct {
	ID     string `xml:"ID,omitempty"`
	Filter struct {
		Prefix string `xml:"Prefix"`
	} `xml:"Filter"`
	Status      string `xml:"Status"`
	AbortUpload *struct {
		DaysAfterInitiation int `xml:"DaysAfterInitiation"`
	} `xml:"AbortIncompleteMultipartUpload,omitempty"`
	Expiration *struct {
		Days int `xml:"Days"`
	} `xml:"Expiration,omitempty"`
}

// maxLifecycleBody bounds a lifecycle document (1,000 rules).
const maxLifecycleBody = 1 << 20

// parseLifecycle checks a lifecycle document and returns what the store keeps.
func parseLifecycle(raw []byte) (*store.Lifecycle, *apiError) {
	var conf lifecycleConfiguration
	if len(raw) > maxLifecycleBody || xml.Unmarshal(raw, &conf) != nil || len(conf.Rules) == 0 || len(conf.Rules) > 1000 {
		return nil, errMalformedXML()
	}
	lc := &store.Lifecycle{}
	ids := map[string]bool{}
	for _, r := range conf.Rules {
		if r.Status != "Enabled" && r.Status != "Disabled" {
			return nil, errMalformedXML()
		}
		if r.ID != "" && ids[r.ID] {
			return nil, errInvalidArgument("Rule ID must be unique. Found same ID for more than one rule")
		}
		ids[r.ID] = true
		rule := store.LifecycleRule{ID: r.ID, Prefix: r.Prefix, Enabled: r.Status == "Enabled"}
		if r.Filter != nil {
			rule.Prefix = r.Filter.Prefix
		}
		if r.AbortUpload != nil {
			if r.AbortUpload.DaysAfterInitiation <= 0 {
				return nil, errInvalidArgument("'DaysAfterInitiation' for AbortIncompleteMultipartUpload action must be a positive integer")
			}
			rule.AbortIncompleteDays = r.AbortUpload.DaysAfterInitiation
		}
		if r.Expiration != nil {
			if r.Expiration.Days <= 0 {
				return nil, errInvalidArgument("'Days' for Expiration action must be a positive integer")
			}
			rule.ExpirationDays = r.Expiration.Days
		}
		if rule.AbortIncompleteDays == 0 && rule.ExpirationDays == 0 {
			return nil, errInvalidArgument("At least one action needs to be specified in a rule")
		}
		lc.Rules = append(lc.Rules, rule)
	}
	return lc, nil
}

func (s *Server) putBucketLifecycle(rq *request) error {
	if rq.r.Header.Get("Content-Md5") == "" && !hasChecksumHeader(rq.r.Header) {
		return errInvalidRequest("Missing required header for this request: Content-MD5")
	}
	raw, err := io.ReadAll(io.LimitReader(rq.body, maxLifecycleBody+1))
	if f := rq.body.failure(); f != nil {
		return f
	}
	if err != nil {
		return errIncompleteBody()
	}
	lc, e := parseLifecycle(raw)
	if e != nil {
		return e
	}
	if err := s.storage.SetBucketLifecycle(rq.bucket, lc); err != nil {
		return err
	}
	rq.w.WriteHeader(http.StatusOK)
	return nil
}

func (s *Server) getBucketLifecycle(rq *request) error {
	lc, err := s.storage.GetBucketLifecycle(rq.bucket)
	if err != nil {
		return err
	}
	out := lifecycleOut{}
	for _, r := range lc.Rules {
		o := lifecycleRuleOut{ID: r.ID, Status: "Disabled"}
		if r.Enabled {
			o.Status = "Enabled"
		}
		o.Filter.Prefix = r.Prefix
		if r.AbortIncompleteDays > 0 {
			o.AbortUpload = &struct {
				DaysAfterInitiation int `xml:"DaysAfterInitiation"`
			}{r.AbortIncompleteDays}
		}
		if r.ExpirationDays > 0 {
			o.Expiration = &struct {
				Days int `xml:"Days"`
			}{r.ExpirationDays}
		}
		out.Rules = append(out.Rules, o)
	}
	return writeXML(rq.w, http.StatusOK, out)
}

func (s *Server) deleteBucketLifecycle(rq *request) error {
	if err := s.storage.SetBucketLifecycle(rq.bucket, nil); err != nil {
		return err
	}
	rq.w.WriteHeader(http.StatusNoContent)
	return nil
}

// applyLifecycle aborts the bucket's multipart uploads that an enabled
// AbortIncompleteMultipartUpload rule says are too old, as COS's
// background lifecycle job would. The emulator has no background job: it
// applies the rules when uploads are listed or started, with days of
// Options.LifecycleDay.
func (s *Server) applyLifecycle(bucket string) {
	lc, err := s.storage.GetBucketLifecycle(bucket)
	if err != nil {
		return
	}
	var ups []store.Upload
	now := s.clock()
	for _, r := range lc.Rules {
		if !r.Enabled || r.AbortIncompleteDays == 0 {
			continue
		}
		if ups == nil {
			if ups, err = s.storage.ListMultipartUploads(bucket); err != nil {
				return
			}
		}
		limit := time.Duration(r.AbortIncompleteDays) * s.lifecycleDay
		for _, u := range ups {
			if strings.HasPrefix(u.Key, r.Prefix) && now.Sub(u.Initiated) >= limit {
				if err := s.storage.AbortMultipartUpload(bucket, u.Key, u.ID); err == nil {
					klog.V(2).InfoS("Lifecycle rule aborted an incomplete multipart upload", "bucket", bucket, "key", u.Key, "rule", r.ID)
				}
			}
		}
	}
}
