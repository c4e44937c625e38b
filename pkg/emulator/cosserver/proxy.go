package cosserver

import (
	"context"
	"encoding/xml"
	"errors"
	"io"
	"net/http"
	"net/http/httputil"
	"strconv"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	"k8s.io/klog/v2"

	"github.com/cosmount/cosmount/pkg/emulator/audit"
)

type proxyCtxKey struct{}

// headersNotForwarded are the client's authentication and framing headers,
// which mean nothing to the backend once the body is decoded and re-signed.
var headersNotForwarded = []string{
	"Authorization", "X-Amz-Date", "X-Amz-Security-Token", "X-Amz-Content-Sha256",
	"X-Amz-Decoded-Content-Length", "X-Amz-Trailer", "Ibm-Service-Instance-Id",
}

func newProxy(b *Backend) (*httputil.ReverseProxy, error) {
	if b.URL == nil || b.URL.Scheme == "" || b.URL.Host == "" {
		return nil, errors.New("cosserver: Backend.URL must be an absolute URL")
	}
	if b.AccessKeyID == "" || b.SecretAccessKey == "" {
		return nil, errors.New("cosserver: Backend needs HMAC credentials")
	}
	region := b.Region
	if region == "" {
		region = "us-east-1"
	}
	creds := aws.Credentials{AccessKeyID: b.AccessKeyID, SecretAccessKey: b.SecretAccessKey, Source: "cosmount-emulator"}
	signer := v4.NewSigner(func(o *v4.SignerOptions) { o.DisableURIPathEscaping = true })
	base := strings.TrimSuffix(b.URL.Path, "/")
	return &httputil.ReverseProxy{
		Transport: b.Transport,
		Rewrite: func(pr *httputil.ProxyRequest) {
			rq := pr.In.Context().Value(proxyCtxKey{}).(*request)
			out := pr.Out
			for _, h := range headersNotForwarded {
				out.Header.Del(h)
			}
			if ce := removeToken(out.Header.Get("Content-Encoding"), "aws-chunked"); ce != "" {
				out.Header.Set("Content-Encoding", ce)
			} else {
				out.Header.Del("Content-Encoding")
			}
			// Always path style toward the backend.
			path := base + "/" + rq.bucket
			if rq.key != "" {
				path += "/" + rq.key
			}
			if rq.bucket == "" {
				path = base + "/"
			}
			out.URL.Scheme, out.URL.Host, out.Host = b.URL.Scheme, b.URL.Host, b.URL.Host
			out.URL.Path, out.URL.RawPath = path, uriEncode(path, false)
			out.Header.Set("X-Amz-Content-Sha256", unsignedPayload)
			// The backend checks real time, whatever clock this server is given.
			if err := signer.SignHTTP(out.Context(), creds, out, unsignedPayload, "s3", region, time.Now()); err != nil {
				klog.ErrorS(err, "Signing a request for the COS backend failed", "requestID", rq.id)
			}
		},
		ModifyResponse: func(resp *http.Response) error {
			rq := resp.Request.Context().Value(proxyCtxKey{}).(*request)
			// The client sees this server's request id, not the backend's.
			resp.Header.Del("X-Amz-Id-2")
			resp.Header.Set("X-Amz-Request-Id", rq.id)
			resp.Header.Set("X-Clv-Request-Id", rq.id)
			if resp.StatusCode >= 400 {
				rewriteBackendError(rq, resp)
			}
			return nil
		},
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			rq := r.Context().Value(proxyCtxKey{}).(*request)
			w.Header().Set("X-Amz-Request-Id", rq.id)
			w.Header().Set("X-Clv-Request-Id", rq.id)
			if f := rq.body.failure(); f != nil {
				rq.srv.fail(rq, f)
				return
			}
			klog.ErrorS(err, "COS backend request failed", "requestID", rq.id, "operation", rq.op)
			rq.srv.fail(rq, &apiError{Status: http.StatusBadGateway, Code: "ServiceUnavailable",
				Message: "The COS backend could not be reached."})
		},
	}, nil
}

// forward sends an authenticated, authorized request to the backend.
func (s *Server) forward(rq *request) {
	if rq.op == opCreateBucket {
		if e := s.checkCreateBody(rq); e != nil {
			s.fail(rq, e)
			return
		}
	}
	rq.srv = s
	r := rq.r.WithContext(context.WithValue(rq.r.Context(), proxyCtxKey{}, rq))
	r.Body = io.NopCloser(rq.body)
	r.ContentLength = rq.body.size
	if r.ContentLength == 0 {
		r.Body = http.NoBody
	}
	// The backend's response headers are added to these; ModifyResponse and
	// ErrorHandler put this server's own back.
	for _, h := range []string{"X-Amz-Request-Id", "X-Clv-Request-Id", "Server"} {
		rq.w.Header().Del(h)
	}
	s.proxy.ServeHTTP(rq.w, r)
}

// checkCreateBody validates the LocationConstraint of a CreateBucket before
// it is forwarded, and puts the body back for the backend.
func (s *Server) checkCreateBody(rq *request) *apiError {
	conf, raw, e := readCreateBucketConfiguration(rq.body)
	if e != nil {
		return e
	}
	if _, e := locationConstraint(rq.cfg.Location, conf.LocationConstraint); e != nil {
		return e
	}
	rq.body = &payload{r: strings.NewReader(string(raw)), size: int64(len(raw)), max: -1}
	return nil
}

// maxBackendError bounds the error documents read back from the backend.
const maxBackendError = 64 << 10

// rewriteBackendError records the backend's error code in the audit log and
// re-renders the error in IBM's format with this server's request id. HEAD
// errors have no body, so their code is the status text ("NotFound").
func rewriteBackendError(rq *request, resp *http.Response) {
	code := strings.ReplaceAll(http.StatusText(resp.StatusCode), " ", "")
	if resp.Request.Method != http.MethodHead && resp.ContentLength <= maxBackendError {
		msg := http.StatusText(resp.StatusCode)
		raw, err := io.ReadAll(io.LimitReader(resp.Body, maxBackendError))
		_ = resp.Body.Close()
		var doc struct {
			Code    string `xml:"Code"`
			Message string `xml:"Message"`
		}
		if err == nil && xml.Unmarshal(raw, &doc) == nil && doc.Code != "" {
			code, msg = doc.Code, doc.Message
		}
		body := errorXML(code, msg, resource(rq.bucket, rq.key), rq.id, resp.StatusCode)
		resp.Body = io.NopCloser(strings.NewReader(body))
		resp.ContentLength = int64(len(body))
		resp.Header.Set("Content-Length", strconv.Itoa(len(body)))
		resp.Header.Set("Content-Type", "application/xml")
	}
	audit.From(rq.r.Context()).SetError(code)
}

func removeToken(list, token string) string {
	var keep []string
	for _, v := range strings.Split(list, ",") {
		if v = strings.TrimSpace(v); v != "" && !strings.EqualFold(v, token) {
			keep = append(keep, v)
		}
	}
	return strings.Join(keep, ", ")
}
