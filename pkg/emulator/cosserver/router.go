package cosserver

import (
	"net/http"
	"net/url"
	"slices"

	"github.com/cosmount/cosmount/pkg/emulator/config"
)

// Operation names, as S3 calls them (recorded in the audit log).
const (
	opListBuckets             = "ListBuckets"
	opCreateBucket            = "CreateBucket"
	opHeadBucket              = "HeadBucket"
	opDeleteBucket            = "DeleteBucket"
	opGetBucketLocation       = "GetBucketLocation"
	opListObjects             = "ListObjects"
	opListObjectsV2           = "ListObjectsV2"
	opListMultipartUploads    = "ListMultipartUploads"
	opDeleteObjects           = "DeleteObjects"
	opPutObject               = "PutObject"
	opCopyObject              = "CopyObject"
	opGetObject               = "GetObject"
	opHeadObject              = "HeadObject"
	opDeleteObject            = "DeleteObject"
	opCreateMultipartUpload   = "CreateMultipartUpload"
	opUploadPart              = "UploadPart"
	opUploadPartCopy          = "UploadPartCopy"
	opCompleteMultipartUpload = "CompleteMultipartUpload"
	opAbortMultipartUpload    = "AbortMultipartUpload"
	opListParts               = "ListParts"
	opPutBucketLifecycle      = "PutBucketLifecycleConfiguration"
	opGetBucketLifecycle      = "GetBucketLifecycleConfiguration"
	opDeleteBucketLifecycle   = "DeleteBucketLifecycle"

	// opUnknownMethod marks a method S3 has no operation for.
	opUnknownMethod = "UnknownMethod"
)

// opActions is the policy action each operation needs on its target bucket.
var opActions = map[string]config.Action{
	opListBuckets:             config.ActionListBuckets,
	opCreateBucket:            config.ActionCreateBucket,
	opHeadBucket:              config.ActionHeadBucket,
	opDeleteBucket:            config.ActionDeleteBucket,
	opGetBucketLocation:       config.ActionHeadBucket,
	opListObjects:             config.ActionListObjects,
	opListObjectsV2:           config.ActionListObjects,
	opListMultipartUploads:    config.ActionListObjects,
	opDeleteObjects:           config.ActionDeleteObject,
	opPutObject:               config.ActionPutObject,
	opCopyObject:              config.ActionPutObject,
	opGetObject:               config.ActionGetObject,
	opHeadObject:              config.ActionGetObject,
	opDeleteObject:            config.ActionDeleteObject,
	opCreateMultipartUpload:   config.ActionPutObject,
	opUploadPart:              config.ActionPutObject,
	opUploadPartCopy:          config.ActionPutObject,
	opCompleteMultipartUpload: config.ActionPutObject,
	opAbortMultipartUpload:    config.ActionPutObject,
	opListParts:               config.ActionPutObject,
	opPutBucketLifecycle:      config.ActionCreateBucket, // bucket configuration: Manager
	opGetBucketLifecycle:      config.ActionHeadBucket,
	opDeleteBucketLifecycle:   config.ActionCreateBucket,
}

var handlers = map[string]func(*Server, *request) error{
	opListBuckets:             (*Server).listBuckets,
	opCreateBucket:            (*Server).createBucket,
	opHeadBucket:              (*Server).headBucket,
	opDeleteBucket:            (*Server).deleteBucket,
	opGetBucketLocation:       (*Server).getBucketLocation,
	opListObjects:             (*Server).listObjectsV1,
	opListObjectsV2:           (*Server).listObjectsV2,
	opListMultipartUploads:    (*Server).listMultipartUploads,
	opDeleteObjects:           (*Server).deleteObjects,
	opPutObject:               (*Server).putObject,
	opCopyObject:              (*Server).copyObject,
	opGetObject:               (*Server).getObject,
	opHeadObject:              (*Server).getObject,
	opDeleteObject:            (*Server).deleteObject,
	opCreateMultipartUpload:   (*Server).createMultipartUpload,
	opUploadPart:              (*Server).uploadPart,
	opUploadPartCopy:          (*Server).uploadPart,
	opCompleteMultipartUpload: (*Server).completeMultipartUpload,
	opAbortMultipartUpload:    (*Server).abortMultipartUpload,
	opListParts:               (*Server).listParts,
	opPutBucketLifecycle:      (*Server).putBucketLifecycle,
	opGetBucketLifecycle:      (*Server).getBucketLifecycle,
	opDeleteBucketLifecycle:   (*Server).deleteBucketLifecycle,
}

// subresources are query parameters that select a different S3 API than the
// plain object or bucket one. Those the emulator does not implement answer
// NotImplemented instead of being mistaken for a plain GET or PUT; other
// unknown parameters (such as the SDK's "x-id") are ignored.
var subresources = []string{
	"acl", "versioning", "cors", "lifecycle", "policy", "tagging", "website", "logging",
	"notification", "replication", "encryption", "object-lock", "retention", "legal-hold",
	"versions", "accelerate", "requestPayment", "torrent", "restore", "select", "protection",
	"uploads", "uploadId", "delete", "location", "partNumber", "firewall", "metrics", "analytics",
	"inventory", "intelligent-tiering", "ownershipControls", "publicAccessBlock", "attributes",
}

// operation names the S3 operation of a request ("" when the request uses a
// subresource the emulator does not implement).
func operation(method, bucket, key string, q url.Values, h http.Header) string {
	has := func(name string) bool { _, ok := q[name]; return ok }
	var sub []string
	for _, name := range subresources {
		if has(name) {
			sub = append(sub, name)
		}
	}
	only := func(names ...string) bool {
		for _, s := range sub {
			if !slices.Contains(names, s) {
				return false
			}
		}
		return true
	}
	switch {
	case bucket == "":
		if method == http.MethodGet && len(sub) == 0 {
			return opListBuckets
		}
		if method == http.MethodGet {
			return ""
		}
		return opUnknownMethod
	case key == "":
		switch method {
		case http.MethodGet:
			switch {
			case len(sub) == 0 && q.Get("list-type") == "2":
				return opListObjectsV2
			case len(sub) == 0:
				return opListObjects
			case len(sub) == 1 && has("location"):
				return opGetBucketLocation
			case len(sub) == 1 && has("uploads"):
				return opListMultipartUploads
			case len(sub) == 1 && has("lifecycle"):
				return opGetBucketLifecycle
			}
			return ""
		case http.MethodHead:
			return opHeadBucket
		case http.MethodPut:
			switch {
			case len(sub) == 0:
				return opCreateBucket
			case len(sub) == 1 && has("lifecycle"):
				return opPutBucketLifecycle
			}
			return ""
		case http.MethodDelete:
			switch {
			case len(sub) == 0:
				return opDeleteBucket
			case len(sub) == 1 && has("lifecycle"):
				return opDeleteBucketLifecycle
			}
			return ""
		case http.MethodPost:
			if len(sub) == 1 && has("delete") {
				return opDeleteObjects
			}
			return ""
		}
		return opUnknownMethod
	}
	switch method {
	case http.MethodGet:
		switch {
		case len(sub) == 0:
			return opGetObject
		case only("uploadId"):
			return opListParts
		}
		return ""
	case http.MethodHead:
		if len(sub) == 0 {
			return opHeadObject
		}
		return ""
	case http.MethodPut:
		switch {
		case has("partNumber") && has("uploadId") && only("partNumber", "uploadId"):
			if h.Get("x-amz-copy-source") != "" {
				return opUploadPartCopy
			}
			return opUploadPart
		case len(sub) == 0 && h.Get("x-amz-copy-source") != "":
			return opCopyObject
		case len(sub) == 0:
			return opPutObject
		}
		return ""
	case http.MethodDelete:
		switch {
		case len(sub) == 0:
			return opDeleteObject
		case only("uploadId"):
			return opAbortMultipartUpload
		}
		return ""
	case http.MethodPost:
		switch {
		case len(sub) == 1 && has("uploads"):
			return opCreateMultipartUpload
		case len(sub) == 1 && has("uploadId"):
			return opCompleteMultipartUpload
		}
		return ""
	}
	return opUnknownMethod
}
