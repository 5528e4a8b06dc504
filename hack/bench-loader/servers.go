package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"github.com/johannesboyne/gofakes3"

	"github.com/mlplane/mlplane/internal/modelload/hf/fakehub"
)

// counter counts what a server sent: response body bytes of file content
// (S3 GetObject, the hub's resolve answers and the CDN) and of everything
// else (listings, model info, errors), and requests.
type counter struct {
	content, other atomic.Int64
	requests       atomic.Int64
	gets           atomic.Int64
}

type served struct {
	Content, Other, Requests, Gets int64
}

func (c *counter) snapshot() served {
	return served{c.content.Load(), c.other.Load(), c.requests.Load(), c.gets.Load()}
}

func (s served) sub(o served) served {
	return served{s.Content - o.Content, s.Other - o.Other, s.Requests - o.Requests, s.Gets - o.Gets}
}

// count wraps h; isContent says whether a request's body is file content
// (counted as such when the status is 2xx: a redirect's or an error's body
// is not).
func (c *counter) count(h http.Handler, isContent func(*http.Request) bool) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c.requests.Add(1)
		if r.Method == http.MethodGet {
			c.gets.Add(1)
		}
		h.ServeHTTP(&countingWriter{ResponseWriter: w, c: c, content: isContent(r)}, r)
	})
}

// countingWriter counts body bytes. It keeps the ResponseWriter's
// io.ReaderFrom, so that a file body still goes out by sendfile.
type countingWriter struct {
	http.ResponseWriter
	c       *counter
	content bool
	status  int
}

func (w *countingWriter) add(n int64) {
	if w.content && (w.status == 0 || w.status/100 == 2) {
		w.c.content.Add(n)
	} else {
		w.c.other.Add(n)
	}
}

func (w *countingWriter) WriteHeader(code int) {
	if w.status == 0 && code >= 200 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *countingWriter) Write(p []byte) (int, error) {
	k, err := w.ResponseWriter.Write(p)
	w.add(int64(k))
	return k, err
}

func (w *countingWriter) ReadFrom(r io.Reader) (int64, error) {
	if rf, ok := w.ResponseWriter.(io.ReaderFrom); ok {
		k, err := rf.ReadFrom(r)
		w.add(k)
		return k, err
	}
	return io.Copy(writerOnly{w}, r)
}

func (w *countingWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (w *countingWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

type writerOnly struct{ io.Writer }

// servers are the S3 server and the hub with its CDN, on loopback.
type servers struct {
	s3URL, hubURL, cdnURL string
	s3, hub               counter
	caFile                string
	closers               []func()
}

const (
	s3Bucket = "models"
	s3Prefix = "bench-model"
	hubRepo  = "bench/model"
)

// startServers serves the model in dir: gofakes3 (bucket s3Bucket, prefix
// s3Prefix/) and the fake hub (repository hubRepo) with its CDN, each on its
// own 127.0.0.1 port. With tlsDir, all three speak TLS with a certificate
// of a CA written to tlsDir/ca.pem; S3 speaks HTTP/1.1 only (as S3 does),
// the hub and CDN also HTTP/2 when hubH2.
func startServers(dir string, files []modelFile, tlsDir string, hubH2, s3CRC bool) (*servers, error) {
	s := &servers{}
	var tcfg *tls.Config
	if tlsDir != "" {
		var err error
		if tcfg, s.caFile, err = makeTLS(tlsDir); err != nil {
			return nil, err
		}
	}
	serve := func(h http.Handler, h2 bool) (string, error) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return "", err
		}
		srv := &http.Server{Handler: h, ReadHeaderTimeout: time.Minute, ErrorLog: nil}
		scheme := "http"
		if tcfg != nil {
			scheme = "https"
			srv.TLSConfig = tcfg.Clone()
			if !h2 {
				srv.TLSNextProto = map[string]func(*http.Server, *tls.Conn, http.Handler){}
			}
			go srv.ServeTLS(ln, "", "")
		} else {
			go srv.Serve(ln)
		}
		s.closers = append(s.closers, func() { srv.Close() })
		return scheme + "://" + ln.Addr().String(), nil
	}

	backend, err := newDiskBackend(s3Bucket, s3Prefix+"/", dir, files, s3CRC)
	if err != nil {
		s.close()
		return nil, err
	}
	faker := gofakes3.New(backend, gofakes3.WithLogger(gofakes3.DiscardLog()))
	s.s3URL, err = serve(s.s3.count(faker.Server(), func(r *http.Request) bool {
		// /bucket/key is an object; /bucket and / are listings.
		_, key, _ := strings.Cut(strings.TrimPrefix(r.URL.Path, "/"), "/")
		return key != ""
	}), false)
	if err != nil {
		s.close()
		return nil, err
	}

	hub := fakehub.New()
	if s.cdnURL, err = serve(s.hub.count(hub.CDN(), func(*http.Request) bool { return true }), hubH2); err != nil {
		s.close()
		return nil, err
	}
	hub.CDNURL = s.cdnURL
	if _, err := hub.Add(hubRepo, fakehub.Repo{Dir: dir}); err != nil {
		s.close()
		return nil, err
	}
	if s.hubURL, err = serve(s.hub.count(hub, func(r *http.Request) bool {
		return !strings.HasPrefix(r.URL.Path, "/api/")
	}), hubH2); err != nil {
		s.close()
		return nil, err
	}
	return s, nil
}

func (s *servers) close() {
	for _, c := range s.closers {
		c()
	}
}

// makeTLS makes a CA and a certificate for 127.0.0.1 signed by it; the CA
// goes to dir/ca.pem.
func makeTLS(dir string) (*tls.Config, string, error) {
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, "", err
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "bench-loader CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(7 * 24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return nil, "", err
	}
	ca, _ := x509.ParseCertificate(caDER)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, "", err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "127.0.0.1"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(7 * 24 * time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, DNSNames: []string{"localhost"},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		return nil, "", err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, "", err
	}
	caFile := dir + "/ca.pem"
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}), 0o644); err != nil {
		return nil, "", err
	}
	cert := tls.Certificate{Certificate: [][]byte{der, caDER}, PrivateKey: key}
	return &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}, caFile, nil
}
