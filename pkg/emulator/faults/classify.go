package faults

import (
	"net/http"
	"strings"
)

// S3Classifier returns a classifier that names S3 operations the way COS's
// API reference does ("PutObject", "ListObjectsV2", ...), for rules that
// target one operation. Requests are read path-style; when domain is set, a
// Host of "<bucket>.<domain>" is read virtual-host style.
func S3Classifier(domain string) func(*http.Request) string {
	return func(r *http.Request) string {
		bucket, key := splitPath(r.URL.Path)
		if domain != "" {
			host := r.Host
			if h, _, ok := strings.Cut(host, ":"); ok {
				host = h
			}
			if b, ok := strings.CutSuffix(host, "."+domain); ok && b != "" {
				bucket, key = b, strings.TrimPrefix(r.URL.Path, "/")
			}
		}
		return s3Operation(r, bucket, key)
	}
}

func splitPath(p string) (bucket, key string) {
	p = strings.TrimPrefix(p, "/")
	bucket, key, _ = strings.Cut(p, "/")
	return bucket, key
}

func s3Operation(r *http.Request, bucket, key string) string {
	q := r.URL.Query()
	has := func(name string) bool { _, ok := q[name]; return ok }
	copySource := r.Header.Get("x-amz-copy-source") != ""
	switch {
	case bucket == "":
		if r.Method == http.MethodGet {
			return "ListBuckets"
		}
	case key == "":
		switch r.Method {
		case http.MethodGet:
			switch {
			case has("location"):
				return "GetBucketLocation"
			case has("uploads"):
				return "ListMultipartUploads"
			case has("lifecycle"):
				return "GetBucketLifecycleConfiguration"
			case q.Get("list-type") == "2":
				return "ListObjectsV2"
			}
			return "ListObjects"
		case http.MethodPut:
			if has("lifecycle") {
				return "PutBucketLifecycleConfiguration"
			}
			return "CreateBucket"
		case http.MethodHead:
			return "HeadBucket"
		case http.MethodDelete:
			if has("lifecycle") {
				return "DeleteBucketLifecycle"
			}
			return "DeleteBucket"
		case http.MethodPost:
			if has("delete") {
				return "DeleteObjects"
			}
		}
	default:
		switch r.Method {
		case http.MethodGet:
			if has("uploadId") {
				return "ListParts"
			}
			return "GetObject"
		case http.MethodHead:
			return "HeadObject"
		case http.MethodPut:
			switch {
			case has("uploadId") && copySource:
				return "UploadPartCopy"
			case has("uploadId"):
				return "UploadPart"
			case copySource:
				return "CopyObject"
			}
			return "PutObject"
		case http.MethodDelete:
			if has("uploadId") {
				return "AbortMultipartUpload"
			}
			return "DeleteObject"
		case http.MethodPost:
			switch {
			case has("uploads"):
				return "CreateMultipartUpload"
			case has("uploadId"):
				return "CompleteMultipartUpload"
			}
		}
	}
	return ""
}

// IAMClassifier names the IAM endpoints: "Token" for the token exchange and
// "Keys" for the public keys.
func IAMClassifier(r *http.Request) string {
	switch strings.TrimSuffix(r.URL.Path, "/") {
	case "/identity/token":
		return "Token"
	case "/identity/keys":
		return "Keys"
	}
	return ""
}
