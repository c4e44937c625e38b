package cos

import (
	"context"
	"errors"
	"fmt"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
)

// AbortUploadsRuleID names the lifecycle rule SetAbortIncompleteUploads
// installs.
const AbortUploadsRuleID = "cosmount-abort-incomplete-uploads"

// SetAbortIncompleteUploads gives the bucket a lifecycle configuration
// whose one rule aborts every multipart upload days after it was started,
// so that the parts of uploads nobody completed (a crashed server, a lost
// node) stop costing money. It replaces any lifecycle configuration the
// bucket had: call it on buckets this program made.
func (c *Client) SetAbortIncompleteUploads(ctx context.Context, bucket string, days int32) error {
	if days <= 0 {
		return fmt.Errorf("cos: abort incomplete uploads after %d days: must be positive", days)
	}
	in := &s3.PutBucketLifecycleConfigurationInput{
		Bucket: &bucket,
		LifecycleConfiguration: &types.BucketLifecycleConfiguration{Rules: []types.LifecycleRule{{
			ID:                             aws.String(AbortUploadsRuleID),
			Status:                         types.ExpirationStatusEnabled,
			Filter:                         &types.LifecycleRuleFilter{Prefix: aws.String("")},
			AbortIncompleteMultipartUpload: &types.AbortIncompleteMultipartUpload{DaysAfterInitiation: aws.Int32(days)},
		}}},
	}
	return c.call(ctx, "PutBucketLifecycleConfiguration", bucket, "", nil, 0, func(ctx context.Context) error {
		_, err := c.s3.PutBucketLifecycleConfiguration(ctx, in, withContentMD5)
		return err
	})
}

// AbortIncompleteUploadsDays returns the DaysAfterInitiation of the
// bucket's enabled rule that aborts incomplete uploads of every key, and
// false when there is none (or no lifecycle configuration at all).
func (c *Client) AbortIncompleteUploadsDays(ctx context.Context, bucket string) (int32, bool, error) {
	var out *s3.GetBucketLifecycleConfigurationOutput
	err := c.call(ctx, "GetBucketLifecycleConfiguration", bucket, "", nil, 0, func(ctx context.Context) error {
		var err error
		out, err = c.s3.GetBucketLifecycleConfiguration(ctx, &s3.GetBucketLifecycleConfigurationInput{Bucket: &bucket})
		return err
	})
	var e *Error
	if errors.As(err, &e) && e.Code == "NoSuchLifecycleConfiguration" {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, err
	}
	for _, r := range out.Rules {
		if r.Status != types.ExpirationStatusEnabled || r.AbortIncompleteMultipartUpload == nil {
			continue
		}
		prefix := aws.ToString(r.Prefix) //nolint:staticcheck // the legacy place of the filter
		if r.Filter != nil && r.Filter.Prefix != nil {
			prefix = aws.ToString(r.Filter.Prefix)
		}
		if prefix == "" {
			return aws.ToInt32(r.AbortIncompleteMultipartUpload.DaysAfterInitiation), true, nil
		}
	}
	return 0, false, nil
}
