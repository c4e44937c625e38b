package cosserver

import (
	"encoding/xml"
	"errors"
	"io"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/cosmount/cosmount/pkg/emulator/config"
	"github.com/cosmount/cosmount/pkg/emulator/store"
)

// storageClasses are the classes a LocationConstraint may name after the location.
var storageClasses = []string{"standard", "vault", "cold", "smart", "onerate_active", "flex"}

// authorize applies the policy to the request's operation and looks up the
// buckets involved. It answers NoSuchBucket only to callers the policy would
// have allowed, so a denied caller learns nothing about bucket existence.
func (s *Server) authorize(rq *request) *apiError {
	p := rq.principal
	action := opActions[rq.op]
	if rq.op == opListBuckets || rq.op == opCreateBucket {
		inst := rq.r.Header.Get("Ibm-Service-Instance-Id")
		if inst == "" && p.Type == config.PrincipalHMAC {
			// An HMAC credential belongs to one instance, which stands in for the header.
			if k := findHMACKey(rq.cfg, p.ID); k != nil {
				inst = k.ServiceInstance
			}
		}
		if !instanceKnown(rq.cfg, inst) {
			return errInvalidArgument("Invalid or missing ibm-service-instance-id header")
		}
		rq.instance = inst
		if !p.Allows(action, inst, rq.bucket, config.Resource{}) {
			return errAccessDenied("")
		}
		return nil
	}
	b, e := s.lookupBucket(rq.bucket)
	if e != nil {
		return e
	}
	if !s.allowsTarget(rq, action, bucketInstance(b)) {
		return errAccessDenied("")
	}
	if s.storage != nil && b == nil {
		return errNoSuchBucket()
	}
	rq.bucketInfo = b
	if rq.op != opCopyObject && rq.op != opUploadPartCopy {
		return nil
	}
	src, e := parseCopySource(rq.r.Header.Get("X-Amz-Copy-Source"))
	if e != nil {
		return e
	}
	rq.copySource = src
	sb, e := s.lookupBucket(src.bucket)
	if e != nil {
		return e
	}
	if !p.Allows(config.ActionGetObject, bucketInstance(sb), src.bucket, config.ObjectResource(src.key)) {
		return errAccessDenied("")
	}
	if s.storage != nil && sb == nil {
		return errNoSuchBucket()
	}
	return nil
}

// allowsTarget applies the policy to the request's own target: the object
// of an object operation, the prefix and delimiter of a listing, nothing
// for bucket-level operations (IBM's condition attributes path, prefix and
// delimiter). A multi-object delete passes if some objects may be deleted;
// each key is checked when the request is served (deleteObjects), which a
// front for a backend cannot do.
func (s *Server) allowsTarget(rq *request, action config.Action, instance string) bool {
	p := rq.principal
	switch rq.op {
	case opDeleteObjects:
		if s.storage == nil {
			return p.AllowsEveryObject(action, instance, rq.bucket)
		}
		return p.AllowsSomeObjects(action, instance, rq.bucket)
	case opListObjects, opListObjectsV2, opListMultipartUploads:
		var delim *string
		if _, ok := rq.query["delimiter"]; ok {
			d := rq.query.Get("delimiter")
			delim = &d
		}
		return p.Allows(action, instance, rq.bucket, config.ListResource(rq.query.Get("prefix"), delim))
	case opHeadBucket, opGetBucketLocation, opDeleteBucket, opCreateBucket, opListBuckets:
		return p.Allows(action, instance, rq.bucket, config.Resource{})
	}
	return p.Allows(action, instance, rq.bucket, config.ObjectResource(rq.key))
}

// lookupBucket returns the bucket, nil if it does not exist or in backend mode.
func (s *Server) lookupBucket(name string) (*store.Bucket, *apiError) {
	if s.storage == nil {
		return nil, nil
	}
	b, err := s.storage.GetBucket(name)
	if errors.Is(err, store.ErrNoSuchBucket) || errors.Is(err, store.ErrInvalidBucketName) {
		return nil, nil
	}
	if err != nil {
		e := storeError(err)
		if e == nil {
			e = errInternal()
		}
		return nil, e
	}
	return &b, nil
}

func bucketInstance(b *store.Bucket) string {
	if b == nil {
		return ""
	}
	return b.ServiceInstance
}

func instanceKnown(cfg *config.Config, id string) bool {
	if id == "" {
		return false
	}
	for _, si := range cfg.ServiceInstances {
		if si.ID == id {
			return true
		}
	}
	return false
}

// locationConstraint validates a requested LocationConstraint against the
// endpoint's location and returns the one to remember.
func locationConstraint(location, requested string) (string, *apiError) {
	if location == "" {
		location = "us-south"
	}
	req := strings.ToLower(strings.TrimSpace(requested))
	if req == "" {
		return location + "-standard", nil
	}
	if req == location {
		return req, nil
	}
	if class, ok := strings.CutPrefix(req, location+"-"); ok && slices.Contains(storageClasses, class) {
		return req, nil
	}
	return "", &apiError{Status: http.StatusBadRequest, Code: "InvalidLocationConstraint",
		Message: "The specified location-constraint is not valid."}
}

type createBucketConfiguration struct {
	LocationConstraint string `xml:"LocationConstraint"`
}

// readCreateBucketConfiguration reads the optional CreateBucket document.
func readCreateBucketConfiguration(body *payload) (createBucketConfiguration, []byte, *apiError) {
	var conf createBucketConfiguration
	raw, err := io.ReadAll(io.LimitReader(body, 64<<10))
	if f := body.failure(); f != nil {
		return conf, nil, storeError(f)
	}
	if err != nil {
		return conf, nil, errIncompleteBody()
	}
	if len(strings.TrimSpace(string(raw))) > 0 {
		if err := xml.Unmarshal(raw, &conf); err != nil {
			return conf, nil, errMalformedXML()
		}
	}
	return conf, raw, nil
}

func (s *Server) createBucket(rq *request) error {
	conf, _, e := readCreateBucketConfiguration(rq.body)
	if e != nil {
		return e
	}
	lc, e := locationConstraint(rq.cfg.Location, conf.LocationConstraint)
	if e != nil {
		return e
	}
	if err := s.storage.CreateBucket(rq.bucket, lc, rq.instance); err != nil {
		return err
	}
	rq.w.Header().Set("Location", "/"+rq.bucket)
	rq.w.WriteHeader(http.StatusOK)
	return nil
}

func (s *Server) headBucket(rq *request) error {
	rq.w.Header().Set("Ibm-Sse-Kp-Enabled", "false")
	rq.w.WriteHeader(http.StatusOK)
	return nil
}

func (s *Server) deleteBucket(rq *request) error {
	if err := s.storage.DeleteBucket(rq.bucket); err != nil {
		return err
	}
	rq.w.WriteHeader(http.StatusNoContent)
	return nil
}

type locationResult struct {
	XMLName xml.Name `xml:"http://s3.amazonaws.com/doc/2006-03-01/ LocationConstraint"`
	Value   string   `xml:",chardata"`
}

func (s *Server) getBucketLocation(rq *request) error {
	return writeXML(rq.w, http.StatusOK, locationResult{Value: rq.bucketInfo.LocationConstraint})
}

type owner struct {
	ID          string `xml:"ID"`
	DisplayName string `xml:"DisplayName"`
}

type bucketEntry struct {
	Name               string `xml:"Name"`
	CreationDate       string `xml:"CreationDate"`
	LocationConstraint string `xml:"LocationConstraint,omitempty"`
}

type listAllMyBucketsResult struct {
	XMLName xml.Name      `xml:"http://s3.amazonaws.com/doc/2006-03-01/ ListAllMyBucketsResult"`
	Owner   owner         `xml:"Owner"`
	Buckets []bucketEntry `xml:"Buckets>Bucket"`
}

func (s *Server) listBuckets(rq *request) error {
	all, err := s.storage.ListBuckets()
	if err != nil {
		return err
	}
	_, extended := rq.query["extended"]
	res := listAllMyBucketsResult{Owner: owner{ID: rq.instance, DisplayName: rq.instance}, Buckets: []bucketEntry{}}
	for _, b := range all {
		if b.ServiceInstance != rq.instance {
			continue
		}
		e := bucketEntry{Name: b.Name, CreationDate: isoTime(b.Created)}
		if extended {
			e.LocationConstraint = b.LocationConstraint
		}
		res.Buckets = append(res.Buckets, e)
	}
	return writeXML(rq.w, http.StatusOK, res)
}

// writeXML writes an S3 XML document.
func writeXML(w http.ResponseWriter, status int, v any) error {
	b, err := xml.Marshal(v)
	if err != nil {
		return err
	}
	w.Header().Set("Content-Type", "application/xml")
	w.WriteHeader(status)
	_, _ = io.WriteString(w, xml.Header)
	_, _ = w.Write(b)
	return nil
}

// isoTime is the timestamp format of S3 XML documents.
func isoTime(t time.Time) string { return t.UTC().Format("2006-01-02T15:04:05.000Z") }
