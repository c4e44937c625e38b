package cosserver

import (
	"bufio"
	"bytes"
	"crypto/md5"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"hash"
	"hash/crc32"
	"io"
	"net/http"
	"strconv"
	"strings"
)

// maxPutSize is the largest single PUT (and part) COS accepts: 5 GiB.
const maxPutSize int64 = 5 << 30

// maxChunkSize bounds one aws-chunked chunk, which is buffered to check its signature.
const maxChunkSize = 16 << 20

func errIncompleteBody() *apiError {
	return &apiError{Status: http.StatusBadRequest, Code: "IncompleteBody",
		Message: "You did not provide the number of bytes specified by the Content-Length HTTP header."}
}

func errBadDigest(what string) *apiError {
	return &apiError{Status: http.StatusBadRequest, Code: "BadDigest",
		Message: "The " + what + " you specified did not match the calculated checksum."}
}

// payload is a request body as handlers consume it: aws-chunked framing
// removed, and every digest the client declared checked when the body ends,
// so that a store reading it sees an error instead of EOF on a mismatch and
// never commits the object.
type payload struct {
	r io.Reader
	// size is the declared length of the decoded body, -1 if unknown.
	size int64
	// err is the first error the body produced (an *apiError).
	err error
	n   int64
	max int64
}

// newPayload wraps r.Body according to the x-amz-content-sha256 mode and the
// digest headers. chunks, when not nil, verifies aws-chunked chunk signatures.
func newPayload(r *http.Request, mode string, chunks *chunkSigner) (*payload, *apiError) {
	var body io.Reader = http.NoBody
	if r.Body != nil {
		body = r.Body
	}
	p := &payload{size: r.ContentLength, max: -1}
	var dec *chunkDecoder
	switch {
	case mode == streamingSignedPayload || mode == streamingSignedTrailer || mode == streamingUnsignedTrailer:
		dec = &chunkDecoder{br: bufio.NewReader(body), signer: chunks}
		body = dec
		p.size = -1
		if v := r.Header.Get("X-Amz-Decoded-Content-Length"); v != "" {
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil || n < 0 {
				return nil, errInvalidArgument("x-amz-decoded-content-length is not a valid length")
			}
			p.size = n
		}
	case mode == "", mode == unsignedPayload:
	case len(mode) == 64 && isHexString(mode):
		body = &digestReader{r: body, h: sha256.New(), want: func() string { return strings.ToLower(mode) }, encode: hex.EncodeToString,
			fail: &apiError{Status: http.StatusBadRequest, Code: "XAmzContentSHA256Mismatch",
				Message: "The provided 'x-amz-content-sha256' header does not match what was computed."}}
	default:
		return nil, errInvalidArgument("x-amz-content-sha256 must be UNSIGNED-PAYLOAD, a streaming mode or a SHA-256 hex digest")
	}
	if v := r.Header.Get("Content-Md5"); v != "" {
		if b, err := base64.StdEncoding.DecodeString(v); err != nil || len(b) != md5.Size {
			return nil, &apiError{Status: http.StatusBadRequest, Code: "InvalidDigest", Message: "The Content-MD5 you specified was invalid."}
		}
		body = &digestReader{r: body, h: md5.New(), want: func() string { return v }, encode: base64.StdEncoding.EncodeToString, fail: errBadDigest("Content-MD5")}
	}
	for _, c := range checksums {
		v := r.Header.Get(c.header)
		want := func() string { return v }
		if v == "" && dec != nil && strings.EqualFold(r.Header.Get("X-Amz-Trailer"), c.header) {
			want = func() string { return dec.trailer.Get(c.header) }
		} else if v == "" {
			continue
		}
		body = &digestReader{r: body, h: c.new(), want: want, encode: base64.StdEncoding.EncodeToString, fail: errBadDigest(c.name)}
	}
	p.r = body
	return p, nil
}

// limit makes the payload fail with EntityTooLarge beyond max bytes.
func (p *payload) limit(max int64) *apiError {
	if p.size > max {
		return errEntityTooLarge()
	}
	p.max = max
	return nil
}

func (p *payload) Read(b []byte) (int, error) {
	if p.err != nil {
		return 0, p.err
	}
	n, err := p.r.Read(b)
	p.n += int64(n)
	if p.max >= 0 && p.n > p.max {
		err = errEntityTooLarge()
	}
	if err != nil && err != io.EOF {
		var ae *apiError
		if !errors.As(err, &ae) {
			ae = errIncompleteBody()
		}
		p.err = ae
		return n, ae
	}
	return n, err
}

// failure returns the body's own error, if the body is what went wrong.
func (p *payload) failure() error {
	if p == nil || p.err == nil {
		return nil
	}
	return p.err
}

type checksumAlgo struct {
	header, name string
	new          func() hash.Hash
}

var checksums = []checksumAlgo{
	{"X-Amz-Checksum-Crc32", "CRC32", func() hash.Hash { return crc32.NewIEEE() }},
	{"X-Amz-Checksum-Crc32c", "CRC32C", func() hash.Hash { return crc32.New(crc32.MakeTable(crc32.Castagnoli)) }},
	{"X-Amz-Checksum-Sha1", "SHA1", sha1.New},
	{"X-Amz-Checksum-Sha256", "SHA256", sha256.New},
}

// hasChecksumHeader reports whether the request declares any x-amz-checksum-* value.
func hasChecksumHeader(h http.Header) bool {
	for k := range h {
		if strings.HasPrefix(strings.ToLower(k), "x-amz-checksum-") && strings.ToLower(k) != "x-amz-checksum-algorithm" {
			return true
		}
	}
	return false
}

// digestReader hashes what passes through and, at EOF, fails if the digest
// differs from the expected one.
type digestReader struct {
	r      io.Reader
	h      hash.Hash
	want   func() string
	encode func([]byte) string
	fail   *apiError
}

func (d *digestReader) Read(b []byte) (int, error) {
	n, err := d.r.Read(b)
	d.h.Write(b[:n])
	if err == io.EOF && d.encode(d.h.Sum(nil)) != d.want() {
		return n, d.fail
	}
	return n, err
}

func isHexString(s string) bool {
	for i := 0; i < len(s); i++ {
		if !isHex(s[i]) {
			return false
		}
	}
	return true
}

// chunkSigner verifies the signature chain of a STREAMING-AWS4-HMAC-SHA256-PAYLOAD body.
type chunkSigner struct {
	key     []byte
	amzDate string
	scope   string
	prev    string
}

var emptySHA256 = hexSHA256(nil)

func (c *chunkSigner) verify(sig string, data []byte) bool {
	sts := "AWS4-HMAC-SHA256-PAYLOAD\n" + c.amzDate + "\n" + c.scope + "\n" + c.prev + "\n" + emptySHA256 + "\n" + hexSHA256(data)
	want := hex.EncodeToString(hmacSHA256(c.key, sts))
	if want != sig {
		return false
	}
	c.prev = sig
	return true
}

// chunkDecoder removes aws-chunked framing:
// "<hex size>[;chunk-signature=<sig>]\r\n<data>\r\n" ... "0...\r\n[trailers]\r\n".
type chunkDecoder struct {
	br      *bufio.Reader
	signer  *chunkSigner
	left    int64  // unread bytes of the current chunk (unsigned)
	buf     []byte // verified chunk not yet handed out (signed)
	done    bool
	trailer http.Header
}

func errChunk() *apiError {
	return errInvalidRequest("The aws-chunked request body is malformed.")
}

func (d *chunkDecoder) Read(p []byte) (int, error) {
	for {
		switch {
		case len(d.buf) > 0:
			n := copy(p, d.buf)
			d.buf = d.buf[n:]
			return n, nil
		case d.left > 0:
			if int64(len(p)) > d.left {
				p = p[:d.left]
			}
			n, err := d.br.Read(p)
			d.left -= int64(n)
			if d.left == 0 && err == nil {
				err = d.crlf()
			}
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return n, err
		case d.done:
			return 0, io.EOF
		}
		if err := d.next(); err != nil {
			return 0, err
		}
	}
}

func (d *chunkDecoder) crlf() error {
	var b [2]byte
	if _, err := io.ReadFull(d.br, b[:]); err != nil {
		return io.ErrUnexpectedEOF
	}
	if b != [2]byte{'\r', '\n'} {
		return errChunk()
	}
	return nil
}

func (d *chunkDecoder) line() (string, error) {
	l, err := d.br.ReadSlice('\n')
	if err == bufio.ErrBufferFull {
		return "", errChunk()
	}
	if err != nil {
		return "", io.ErrUnexpectedEOF
	}
	return strings.TrimRight(string(l), "\r\n"), nil
}

// next reads the next chunk header (and, when signed, the whole chunk).
func (d *chunkDecoder) next() error {
	l, err := d.line()
	if err != nil {
		return err
	}
	sizeStr, ext, _ := strings.Cut(l, ";")
	size, err := strconv.ParseInt(strings.TrimSpace(sizeStr), 16, 64)
	if err != nil || size < 0 {
		return errChunk()
	}
	sig, _ := strings.CutPrefix(strings.TrimSpace(ext), "chunk-signature=")
	if size == 0 {
		if d.signer != nil && !d.signer.verify(sig, nil) {
			return errSignatureMismatch()
		}
		d.done = true
		return d.readTrailer()
	}
	if d.signer == nil {
		d.left = size
		return nil
	}
	if size > maxChunkSize {
		return errChunk()
	}
	data := make([]byte, size)
	if _, err := io.ReadFull(d.br, data); err != nil {
		return io.ErrUnexpectedEOF
	}
	if err := d.crlf(); err != nil {
		return err
	}
	if !d.signer.verify(sig, data) {
		return errSignatureMismatch()
	}
	d.buf = data
	return nil
}

func (d *chunkDecoder) readTrailer() error {
	d.trailer = http.Header{}
	for {
		l, err := d.br.ReadSlice('\n')
		line := string(bytes.TrimRight(l, "\r\n"))
		if line == "" {
			return nil // blank line or end of body: the trailer is complete
		}
		if k, v, ok := strings.Cut(line, ":"); ok {
			d.trailer.Add(strings.TrimSpace(k), strings.TrimSpace(v))
		}
		if err != nil {
			return nil
		}
	}
}
