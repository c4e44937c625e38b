package cos

import (
	"context"
	"fmt"
	"reflect"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	smithyendpoints "github.com/aws/smithy-go/endpoints"
)

type countingResolver struct {
	calls int
	seen  []s3.EndpointParameters
}

func (r *countingResolver) ResolveEndpoint(ctx context.Context, p s3.EndpointParameters) (smithyendpoints.Endpoint, error) {
	r.calls++
	r.seen = append(r.seen, p)
	return s3.NewDefaultEndpointResolverV2().ResolveEndpoint(ctx, p)
}

func TestCachedEndpoints(t *testing.T) {
	inner := &countingResolver{}
	c := &cachedEndpoints{inner: inner}
	ctx := context.Background()
	params := func(bucket, key string, pathStyle bool) s3.EndpointParameters {
		return s3.EndpointParameters{
			Bucket: aws.String(bucket), Key: aws.String(key), Region: aws.String("us-south"),
			Endpoint: aws.String("https://s3.us-south.cloud-object-storage.appdomain.cloud"), ForcePathStyle: aws.Bool(pathStyle),
			UseFIPS: aws.Bool(false), UseDualStack: aws.Bool(false), Accelerate: aws.Bool(false),
		}
	}
	for i := 0; i < 100; i++ {
		p := params("bucket-a", fmt.Sprintf("dir/file %d", i), true)
		got, err := c.ResolveEndpoint(ctx, p)
		if err != nil {
			t.Fatal(err)
		}
		want, err := s3.NewDefaultEndpointResolverV2().ResolveEndpoint(ctx, p)
		if err != nil {
			t.Fatal(err)
		}
		if got.URI.String() != want.URI.String() || !reflect.DeepEqual(got.Properties, want.Properties) {
			t.Fatalf("cached %v %v, the rules say %v %v", got.URI.String(), got.Properties, want.URI.String(), want.Properties)
		}
	}
	if inner.calls != 1 {
		t.Errorf("the rules ran %d times for one bucket, want 1", inner.calls)
	}
	if inner.seen[0].Key != nil {
		t.Error("the key reached the rules, so the cached answer could depend on it")
	}
	// Another bucket, or virtual-host style, is another answer.
	vh, err := c.ResolveEndpoint(ctx, params("bucket-a", "k", false))
	if err != nil {
		t.Fatal(err)
	}
	if vh.URI.Host != "bucket-a.s3.us-south.cloud-object-storage.appdomain.cloud" {
		t.Errorf("virtual-host style resolved to %s", vh.URI.String())
	}
	other, err := c.ResolveEndpoint(ctx, params("bucket-b", "k", true))
	if err != nil {
		t.Fatal(err)
	}
	if other.URI.Path != "/bucket-b" {
		t.Errorf("bucket-b resolved to %s", other.URI.String())
	}
	if inner.calls != 3 {
		t.Errorf("%d resolutions for three parameter sets, want 3", inner.calls)
	}
	// The cache is bounded; past it every set is resolved anew, still right.
	for i := 0; i < 2*maxCachedEndpoints; i++ {
		if _, err := c.ResolveEndpoint(ctx, params(fmt.Sprintf("b-%d", i), "k", true)); err != nil {
			t.Fatal(err)
		}
	}
	if n := len(c.answers); n > maxCachedEndpoints {
		t.Errorf("%d answers cached, more than %d", n, maxCachedEndpoints)
	}
	// Errors are not cached.
	bad := params("bucket-a", "k", true)
	bad.Endpoint = aws.String("not a url")
	for i := 0; i < 2; i++ {
		if _, err := c.ResolveEndpoint(ctx, bad); err == nil {
			t.Fatal("an endpoint that is not a URL resolved")
		}
	}
}
