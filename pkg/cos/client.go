package cos

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/ratelimit"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/smithy-go/middleware"
	smithyhttp "github.com/aws/smithy-go/transport/http"
	"k8s.io/klog/v2"

	"github.com/cosmount/cosmount/pkg/iam"
)

// HMAC is a COS HMAC credential (an access key id and its secret).
type HMAC struct{ AccessKeyID, SecretAccessKey string }

// Observer receives one call per client operation (after retries): the
// operation name, the payload bytes moved (uploaded for writes, read by the
// caller for GetObject) and the final error, if any. One that also
// implements AttemptObserver sees every HTTP attempt as well.
type Observer interface {
	ObserveRequest(op string, bytes int64, err error)
}

// Options configures a Client. Exactly one of Tokens, HMAC and HMACFile must be set.
type Options struct {
	Endpoint          string        // base URL, e.g. https://s3.us-south.cloud-object-storage.appdomain.cloud
	Region            string        // default "us-south"
	UsePathStyle      bool          // bucket in the path instead of the host name
	Tokens            iam.Source    // bearer auth; if it is also an iam.Invalidator, a 403 invalidates and retries once
	HMAC              *HMAC         // SigV4 auth with a static HMAC key, or
	HMACFile          string        // SigV4 auth with the key in this file (ReadHMACFile's format), re-read when it is replaced
	ServiceInstanceID string        // sent as ibm-service-instance-id on ListBuckets and CreateBucket
	HTTPClient        *http.Client  // default: a transport sized for parallel parts
	MaxAttempts       int           // default 5; 5xx, SlowDown and connection resets are retried
	MaxBackoff        time.Duration // cap of the jittered exponential retry delay; default 5s
	Version           string        // User-Agent "cosmount/<version>"; default "dev"
	Observer          Observer      // optional metrics hook
	Uploads           UploadTracker // optional: learns of every multipart upload started and ended
}

const (
	defaultRegion      = "us-south"
	defaultMaxAttempts = 5
	defaultMaxBackoff  = 5 * time.Second

	// serviceInstanceHeader names the COS service instance on the two
	// operations that are not scoped by a bucket.
	serviceInstanceHeader = "ibm-service-instance-id"
)

// Client is a COS object client. It is safe for concurrent use.
type Client struct {
	s3          *s3.Client
	invalidator iam.Invalidator // nil unless bearer auth with an invalidating source
	instanceID  string
	observer    Observer
	uploads     UploadTracker

	// conditions remembers the IfMatch/IfNoneMatch of a multipart upload
	// between CreateMultipartUpload and CompleteMultipartUpload, where S3
	// evaluates them.
	mu         sync.Mutex
	conditions map[string]PutOptions
}

// New validates opts and builds a client. It does no I/O.
func New(opts Options) (*Client, error) {
	methods := 0
	for _, set := range []bool{opts.Tokens != nil, opts.HMAC != nil, opts.HMACFile != ""} {
		if set {
			methods++
		}
	}
	if methods != 1 {
		return nil, errors.New("cos: exactly one of Options.Tokens (IAM bearer), Options.HMAC and Options.HMACFile must be set")
	}
	if opts.HMAC != nil && (opts.HMAC.AccessKeyID == "" || opts.HMAC.SecretAccessKey == "") {
		return nil, errors.New("cos: HMAC needs both an access key id and a secret access key")
	}
	if opts.Endpoint == "" {
		return nil, errors.New("cos: Options.Endpoint is required")
	}
	u, err := url.Parse(opts.Endpoint)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("cos: Options.Endpoint %q is not an http(s) URL", opts.Endpoint)
	}
	if opts.Region == "" {
		opts.Region = defaultRegion
	}
	if opts.MaxAttempts <= 0 {
		opts.MaxAttempts = defaultMaxAttempts
	}
	if opts.MaxBackoff <= 0 {
		opts.MaxBackoff = defaultMaxBackoff
	}
	if opts.Version == "" {
		opts.Version = "dev"
	}

	// Every request carries the bearer token or an HMAC signature, and the
	// SDK's own client follows 307 and 308 (re-sending headers and body to
	// the host the answer names, if only its port differs). No redirect is
	// ever followed: a redirect is an error answer.
	httpClient := &http.Client{}
	if opts.HTTPClient != nil {
		*httpClient = *opts.HTTPClient
	} else {
		httpClient.Transport = awshttp.NewBuildableClient().WithTransportOptions(func(t *http.Transport) {
			// Parallel multipart parts and readahead share one host; the
			// default of 2 idle connections per host would make most of them
			// reconnect.
			t.MaxIdleConns = 256
			t.MaxIdleConnsPerHost = 64
		}).GetTransport()
	}
	httpClient.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }

	c := &Client{instanceID: opts.ServiceInstanceID, observer: opts.Observer, uploads: opts.Uploads, conditions: map[string]PutOptions{}}
	maxAttempts, maxBackoff := opts.MaxAttempts, opts.MaxBackoff
	s3opts := s3.Options{
		Region:                     opts.Region,
		BaseEndpoint:               aws.String(strings.TrimRight(opts.Endpoint, "/")),
		UsePathStyle:               opts.UsePathStyle,
		EndpointResolverV2:         &cachedEndpoints{inner: s3.NewDefaultEndpointResolverV2()},
		HTTPClient:                 httpClient,
		RequestChecksumCalculation: aws.RequestChecksumCalculationWhenRequired,
		ResponseChecksumValidation: aws.ResponseChecksumValidationWhenRequired,
		Retryer: retry.NewStandard(func(so *retry.StandardOptions) {
			so.MaxAttempts = maxAttempts
			so.MaxBackoff = maxBackoff
			// The client-side retry quota would start failing requests
			// after a burst of errors; a long-lived mount must keep trying.
			so.RateLimiter = ratelimit.None
		}),
		APIOptions: []func(*middleware.Stack) error{
			unsignedPayload,
			userAgent("cosmount/" + opts.Version),
		},
	}
	if ao, ok := opts.Observer.(AttemptObserver); ok {
		s3opts.APIOptions = append(s3opts.APIOptions, observeAttempts(ao))
	}
	if opts.Tokens != nil {
		s3opts.AuthSchemes = []smithyhttp.AuthScheme{&bearerScheme{resolver: &tokenIdentityResolver{src: opts.Tokens}}}
		s3opts.AuthSchemeResolver = onlyScheme{option: bearerOption}
		if inv, ok := opts.Tokens.(iam.Invalidator); ok {
			c.invalidator = inv
		}
	} else if opts.HMACFile != "" {
		p, err := newHMACFileProvider(opts.HMACFile)
		if err != nil {
			return nil, fmt.Errorf("cos: %w", err)
		}
		s3opts.Credentials = p
		s3opts.AuthSchemeResolver = onlyScheme{option: sigV4Option}
	} else {
		key := *opts.HMAC
		s3opts.Credentials = aws.CredentialsProviderFunc(func(context.Context) (aws.Credentials, error) {
			return aws.Credentials{AccessKeyID: key.AccessKeyID, SecretAccessKey: key.SecretAccessKey, Source: "cosmount HMAC"}, nil
		})
		s3opts.AuthSchemeResolver = onlyScheme{option: sigV4Option}
	}
	c.s3 = s3.New(s3opts)
	return c, nil
}

// unsignedPayload stops the SDK from hashing request bodies: COS accepts
// UNSIGNED-PAYLOAD, and hashing would read every part twice.
func unsignedPayload(stack *middleware.Stack) error {
	if _, ok := stack.Finalize.Get((&v4.ComputePayloadSHA256{}).ID()); !ok {
		return nil
	}
	return v4.SwapComputePayloadSHA256ForUnsignedPayloadMiddleware(stack)
}

// userAgent puts "cosmount/<version>" first in the User-Agent, keeping the
// SDK's own tokens after it for support cases.
func userAgent(product string) func(*middleware.Stack) error {
	return func(stack *middleware.Stack) error {
		return stack.Build.Add(middleware.BuildMiddlewareFunc("CosmountUserAgent",
			func(ctx context.Context, in middleware.BuildInput, next middleware.BuildHandler) (middleware.BuildOutput, middleware.Metadata, error) {
				if req, ok := in.Request.(*smithyhttp.Request); ok {
					ua := product
					if sdk := req.Header.Get("User-Agent"); sdk != "" {
						ua += " " + sdk
					}
					req.Header.Set("User-Agent", ua)
				}
				return next.HandleBuild(ctx, in)
			}), middleware.After)
	}
}

// withInstanceHeader adds ibm-service-instance-id to one operation.
func (c *Client) withInstanceHeader(o *s3.Options) {
	if c.instanceID == "" {
		return
	}
	o.APIOptions = append(o.APIOptions, smithyhttp.SetHeaderValue(serviceInstanceHeader, c.instanceID))
}

// call runs one SDK operation: it maps the error, retries once with a fresh
// token after a 403 under an invalidating bearer source, and reports to the
// observer. body, when not nil, is rewound to its starting offset before the
// retry.
func (c *Client) call(ctx context.Context, op, bucket, key string, body io.Seeker, bytes int64, fn func(context.Context) error) error {
	err := c.attempt(ctx, op, bucket, key, body, fn)
	c.observe(op, bytes, err)
	return err
}

func (c *Client) attempt(ctx context.Context, op, bucket, key string, body io.Seeker, fn func(context.Context) error) error {
	var start int64
	if body != nil {
		var err error
		if start, err = body.Seek(0, io.SeekCurrent); err != nil {
			return &Error{Op: op, Bucket: bucket, Key: key, Kind: ErrInvalidArgument, Err: fmt.Errorf("seek body: %w", err)}
		}
	}
	used := &usedToken{}
	if c.invalidator != nil {
		ctx = context.WithValue(ctx, usedTokenKey{}, used)
	}
	err := mapError(op, bucket, key, fn(ctx))
	if err == nil || c.invalidator == nil || !errors.Is(err, ErrAccessDenied) || ctx.Err() != nil {
		return err
	}
	var tokErr *tokenError
	if errors.As(err, &tokErr) {
		// IAM itself refused; a second exchange right away would not help.
		return err
	}
	// COS answers 403 to an expired or revoked token. The cached token may
	// have been revoked early, so force a new exchange and try once more.
	klog.V(2).InfoS("COS denied the access token, refreshing it and retrying once", "op", op, "bucket", bucket)
	if ti, ok := c.invalidator.(tokenInvalidator); ok && used.get() != "" {
		ti.InvalidateToken(used.get())
	} else {
		c.invalidator.Invalidate()
	}
	if body != nil {
		if _, serr := body.Seek(start, io.SeekStart); serr != nil {
			return err
		}
	}
	return mapError(op, bucket, key, fn(context.WithValue(ctx, refreshRetryKey{}, true)))
}

func (c *Client) observe(op string, bytes int64, err error) {
	if c.observer != nil {
		c.observer.ObserveRequest(op, bytes, err)
	}
}
