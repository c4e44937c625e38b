package cos

import (
	"context"
	"sync"

	"github.com/aws/aws-sdk-go-v2/service/s3"
	smithyendpoints "github.com/aws/smithy-go/endpoints"
)

// cachedEndpoints remembers the SDK's endpoint resolution for each set of
// parameters that matters to it. Without it the S3 rules engine runs for
// every request (a fifth of the server's CPU for a small-file read, in
// docs/performance.md), although a mount asks about one bucket at one
// endpoint all its life. The rules never read the object's key, the list
// prefix or the copy source, so those are not part of the cache key and
// the cached answer is the one the rules give for every key.
type cachedEndpoints struct {
	inner s3.EndpointResolverV2

	mu      sync.Mutex
	answers map[endpointKey]smithyendpoints.Endpoint // guarded by mu
}

// maxCachedEndpoints bounds the cache; a client that sees more parameter
// sets than this (the controller, across buckets) resolves the rest anew.
const maxCachedEndpoints = 64

type endpointKey struct {
	bucket, region, endpoint string
	flags                    [10]int8 // each *bool: 0 unset, 1 false, 2 true
}

func tri(b *bool) int8 {
	switch {
	case b == nil:
		return 0
	case *b:
		return 2
	default:
		return 1
	}
}

func str(s *string) string {
	if s == nil {
		return "\x00" // unset differs from ""
	}
	return *s
}

func keyOf(p s3.EndpointParameters) endpointKey {
	return endpointKey{
		bucket: str(p.Bucket), region: str(p.Region), endpoint: str(p.Endpoint),
		flags: [10]int8{
			tri(p.UseFIPS), tri(p.UseDualStack), tri(p.ForcePathStyle), tri(p.Accelerate),
			tri(p.UseGlobalEndpoint), tri(p.UseObjectLambdaEndpoint), tri(p.DisableAccessPoints),
			tri(p.DisableMultiRegionAccessPoints), tri(p.UseArnRegion), tri(p.UseS3ExpressControlEndpoint),
		},
	}
}

func (c *cachedEndpoints) ResolveEndpoint(ctx context.Context, p s3.EndpointParameters) (smithyendpoints.Endpoint, error) {
	// DisableS3ExpressSessionAuth is not in the key: it is never set by
	// this client; a request that has it goes to the rules.
	if p.DisableS3ExpressSessionAuth != nil {
		return c.inner.ResolveEndpoint(ctx, p)
	}
	k := keyOf(p)
	c.mu.Lock()
	e, ok := c.answers[k]
	c.mu.Unlock()
	if ok {
		return e, nil
	}
	// The key, prefix and copy source are left out here too, so that the
	// answer stored cannot depend on them.
	p.Key, p.Prefix, p.CopySource = nil, nil, nil
	e, err := c.inner.ResolveEndpoint(ctx, p)
	if err != nil {
		return e, err
	}
	c.mu.Lock()
	if c.answers == nil {
		c.answers = map[endpointKey]smithyendpoints.Endpoint{}
	}
	if len(c.answers) < maxCachedEndpoints {
		c.answers[k] = e
	}
	c.mu.Unlock()
	return e, nil
}
