package fs

import (
	"context"
	"io"

	"github.com/cosmount/cosmount/pkg/cos"
)

// ObjectStore is what the filesystem needs from a bucket. *cos.Bucket
// satisfies it; memstore.Store is the in-memory double. Errors wrap the cos
// error kinds (cos.ErrNotFound, cos.ErrAccessDenied, ...).
type ObjectStore interface {
	Head(ctx context.Context, key string) (cos.ObjectInfo, error)
	Get(ctx context.Context, key string, o cos.GetOptions) (io.ReadCloser, cos.ObjectInfo, error)
	Put(ctx context.Context, key string, body io.ReadSeeker, size int64, o cos.PutOptions) (cos.ObjectInfo, error)
	CreateMultipart(ctx context.Context, key string, o cos.PutOptions) (string, error)
	UploadPart(ctx context.Context, key, uploadID string, part int32, body io.ReadSeeker, size int64) (cos.CompletedPart, error)
	// UploadPartCopy makes a part from bytes first..last (inclusive) of
	// srcKey, server-side, if srcKey's ETag is ifMatch.
	UploadPartCopy(ctx context.Context, key, uploadID string, part int32, srcKey string, first, last int64, ifMatch string) (cos.CompletedPart, error)
	CompleteMultipart(ctx context.Context, key, uploadID string, parts []cos.CompletedPart) (cos.ObjectInfo, error)
	AbortMultipart(ctx context.Context, key, uploadID string) error
	List(ctx context.Context, o cos.ListOptions) (cos.ListPage, error)
	Copy(ctx context.Context, srcKey, dstKey string, o cos.CopyOptions) (cos.ObjectInfo, error)
	Delete(ctx context.Context, key string) error
	DeleteMany(ctx context.Context, keys []string) error
}
