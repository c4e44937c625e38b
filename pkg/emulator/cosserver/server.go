// Package cosserver is the emulator's IBM Cloud Object Storage endpoint: an
// http.Handler speaking the S3 REST API (path and virtual-host style) the way
// IBM COS does. It owns request authentication (IAM bearer tokens through a
// Verifier, or HMAC SigV4 checked against the configured keys), the policy
// decision for every operation, S3 request parsing and IBM-flavoured S3
// responses. Objects live in a Storage (the emulator's embedded store), or,
// in backend mode, requests are re-signed and forwarded to an external S3
// server.
package cosserver

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
	"time"

	"github.com/cosmount/cosmount/pkg/emulator/audit"
	"github.com/cosmount/cosmount/pkg/emulator/config"
	"github.com/cosmount/cosmount/pkg/emulator/store"
)

// Storage is what the server needs from the object store; *store.Store implements it.
type Storage interface {
	CreateBucket(name, locationConstraint, serviceInstance string) error
	DeleteBucket(name string) error
	GetBucket(name string) (store.Bucket, error)
	ListBuckets() ([]store.Bucket, error)
	PutObject(bucket, key string, r io.Reader, meta store.ObjectMeta, pre store.Precondition) (store.Object, error)
	HeadObject(bucket, key string) (store.Object, error)
	OpenObject(bucket, key string) (store.Object, io.ReadSeekCloser, error)
	DeleteObject(bucket, key string, pre store.Precondition) error
	CopyObject(srcBucket, srcKey, dstBucket, dstKey string, newMeta *store.ObjectMeta, pre store.Precondition) (store.Object, error)
	ListObjects(bucket string, p store.ListParams) (store.ListResult, error)
	CreateMultipartUpload(bucket, key string, meta store.ObjectMeta) (store.Upload, error)
	UploadPart(bucket, key, uploadID string, number int, r io.Reader) (store.Part, error)
	UploadPartCopy(bucket, key, uploadID string, number int, srcBucket, srcKey string, offset, length int64) (store.Part, error)
	CompleteMultipartUpload(bucket, key, uploadID string, parts []store.Part, pre store.Precondition) (store.Object, error)
	AbortMultipartUpload(bucket, key, uploadID string) error
	ListParts(bucket, key, uploadID string) ([]store.Part, error)
	ListMultipartUploads(bucket string) ([]store.Upload, error)
	SetBucketLifecycle(bucket string, lc *store.Lifecycle) error
	GetBucketLifecycle(bucket string) (store.Lifecycle, error)
}

// Verifier checks an IAM access token and names its principal;
// *iamserver.Server implements it. An error whose Expired() method returns
// true, that wraps jwt.ErrTokenExpired or whose text says "expired" is
// reported as an expired token (in the message; the code is AccessDenied).
type Verifier interface {
	VerifyAccessToken(raw string) (*config.Principal, error)
}

// Backend is an external S3 server that requests are forwarded to, after
// authentication and policy, re-signed with its own HMAC credentials.
type Backend struct {
	URL             *url.URL
	AccessKeyID     string
	SecretAccessKey string
	// Region used in the SigV4 scope toward the backend (default "us-east-1").
	Region string
	// Transport used to reach the backend (default http.DefaultTransport).
	Transport http.RoundTripper
}

// Options configure a Server.
type Options struct {
	// Storage holds buckets and objects. Required unless Backend is set.
	Storage Storage
	// Verifier checks bearer tokens; nil refuses every bearer token.
	Verifier Verifier
	// Config returns the current configuration (HMAC keys, service
	// instances, location). Required. Called once per request.
	Config func() *config.Config
	// Clock is the time source for SigV4 request-time checks (default time.Now).
	Clock func() time.Time
	// Domain enables virtual-host style: Host "<bucket>.<Domain>" addresses
	// bucket <bucket>. Path style always works.
	Domain string
	// LifecycleDay is the length of a "day" in lifecycle rules (default
	// 24h); tests shorten it to see rules applied.
	LifecycleDay time.Duration
	// Backend, when set, makes the server a front for an external S3 server;
	// Storage is then not used. The backend knows nothing of service
	// instances, so policies scoped to an instance apply to every bucket
	// (bucket-scoped policies still apply), and ListBuckets lists all of the
	// backend's buckets.
	Backend *Backend
}

// Server is the COS S3 API handler.
type Server struct {
	storage  Storage
	verifier Verifier
	config   func() *config.Config
	clock    func() time.Time
	domain   string
	backend  *Backend
	proxy    *httputil.ReverseProxy

	lifecycleDay time.Duration
}

// New validates the options and returns a Server.
func New(opts Options) (*Server, error) {
	if opts.Config == nil {
		return nil, errors.New("cosserver: Options.Config is required")
	}
	if opts.Storage == nil && opts.Backend == nil {
		return nil, errors.New("cosserver: one of Options.Storage and Options.Backend is required")
	}
	s := &Server{
		storage:  opts.Storage,
		verifier: opts.Verifier,
		config:   opts.Config,
		clock:    opts.Clock,
		domain:   strings.ToLower(strings.Trim(opts.Domain, ".")),
		backend:  opts.Backend,

		lifecycleDay: opts.LifecycleDay,
	}
	if s.lifecycleDay <= 0 {
		s.lifecycleDay = 24 * time.Hour
	}
	if s.clock == nil {
		s.clock = time.Now
	}
	if opts.Backend != nil {
		s.storage = nil
		p, err := newProxy(opts.Backend)
		if err != nil {
			return nil, err
		}
		s.proxy = p
	}
	return s, nil
}

// request is the state of one request while it is served.
type request struct {
	w         http.ResponseWriter
	r         *http.Request
	id        string
	bucket    string
	key       string
	op        string
	query     url.Values
	principal *config.Principal
	cfg       *config.Config
	// body is the request payload after auth decoding (aws-chunked) and
	// with hash verification wrapped around it.
	body *payload
	// instance is the service instance of ListBuckets / CreateBucket.
	instance string
	// bucketInfo is the target bucket (nil in backend mode).
	bucketInfo *store.Bucket
	// copySource is the parsed x-amz-copy-source of copy operations.
	copySource *copySource
	srv        *Server
}

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	rq := &request{w: w, r: r, id: newRequestID(), query: r.URL.Query(), cfg: s.config()}
	if rq.cfg == nil {
		rq.cfg = &config.Config{}
	}
	w.Header().Set("x-amz-request-id", rq.id)
	w.Header().Set("X-Clv-Request-Id", rq.id)
	w.Header().Set("Server", "cosmount-emulator")
	rec := audit.From(r.Context())
	rec.SetRequestID(rq.id)
	rq.bucket, rq.key = s.splitTarget(r)
	rq.op = operation(r.Method, rq.bucket, rq.key, rq.query, r.Header)
	rec.SetOperation(rq.op, rq.bucket, rq.key)

	if e := s.authenticate(rq); e != nil {
		s.fail(rq, e)
		return
	}
	rec.SetPrincipal(string(rq.principal.Type), rq.principal.ID, authScheme(r))
	if rq.op == "" {
		s.fail(rq, errNotImplemented(fmt.Sprintf("%s %s with these parameters is not implemented by the emulator", r.Method, r.URL.Path)))
		return
	}
	if rq.op == opUnknownMethod {
		s.fail(rq, &apiError{Status: http.StatusMethodNotAllowed, Code: "MethodNotAllowed", Message: "The specified method is not allowed against this resource."})
		return
	}
	if e := s.authorize(rq); e != nil {
		s.fail(rq, e)
		return
	}
	if s.backend != nil {
		s.forward(rq)
		return
	}
	h := handlers[rq.op]
	if e := h(s, rq); e != nil {
		s.fail(rq, e)
	}
}

// splitTarget finds bucket and key in the Host (virtual-host style) or path.
func (s *Server) splitTarget(r *http.Request) (bucket, key string) {
	p := r.URL.Path
	if s.domain != "" {
		host := strings.ToLower(r.Host)
		if h, _, err := net.SplitHostPort(host); err == nil {
			host = h
		}
		if b, ok := strings.CutSuffix(host, "."+s.domain); ok && b != "" {
			return b, strings.TrimPrefix(p, "/")
		}
	}
	p = strings.TrimPrefix(p, "/")
	bucket, key, _ = strings.Cut(p, "/")
	return bucket, key
}

func authScheme(r *http.Request) string {
	if strings.HasPrefix(r.Header.Get("Authorization"), sigV4Algorithm) {
		return "sigv4"
	}
	return "bearer"
}

// newRequestID returns a random (version 4) UUID.
func newRequestID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b[:])
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}
