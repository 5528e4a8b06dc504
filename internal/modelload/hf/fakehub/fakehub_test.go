package fakehub_test

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/mlplane/mlplane/internal/modelload/hf/fakehub"
	"github.com/mlplane/mlplane/internal/modelload/modeltest"
)

func get(t *testing.T, c *http.Client, u string, hdr ...string) (*http.Response, []byte) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, u, nil)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", u, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, b
}

// TestModelInfo: the model info has the hub's shape, with sizes, blob ids
// and LFS digests only when blobs=true.
func TestModelInfo(t *testing.T) {
	s := fakehub.NewServer(fakehub.New())
	defer s.Close()
	m := modeltest.Small()
	sha := s.MustAdd("org/m", fakehub.Repo{Files: m, Refs: []string{"v1"}})
	type info struct {
		SHA      string `json:"sha"`
		Gated    any    `json:"gated"`
		Siblings []struct {
			RFilename string `json:"rfilename"`
			BlobID    string `json:"blobId"`
			Size      *int64 `json:"size"`
			LFS       *struct {
				SHA256      string `json:"sha256"`
				Size        int64  `json:"size"`
				PointerSize int    `json:"pointerSize"`
			} `json:"lfs"`
		} `json:"siblings"`
	}
	for _, blobs := range []bool{true, false} {
		u := s.URL + "/api/models/org/m/revision/v1"
		if blobs {
			u += "?blobs=true"
		}
		resp, body := get(t, http.DefaultClient, u)
		var in info
		if err := json.Unmarshal(body, &in); err != nil || resp.StatusCode != 200 {
			t.Fatalf("GET %s: %d %v", u, resp.StatusCode, err)
		}
		if in.SHA != sha || in.Gated != false || len(in.Siblings) != len(m) {
			t.Errorf("info: sha %s gated %v, %d siblings; want %s, false, %d", in.SHA, in.Gated, len(in.Siblings), sha, len(m))
		}
		for _, sib := range in.Siblings {
			b := m[sib.RFilename]
			if !blobs {
				if sib.Size != nil || sib.BlobID != "" || sib.LFS != nil {
					t.Errorf("%s: size, blob id or lfs without blobs=true", sib.RFilename)
				}
				continue
			}
			if sib.Size == nil || *sib.Size != int64(len(b)) || len(sib.BlobID) != 40 {
				t.Errorf("%s: size %v, blob id %q", sib.RFilename, sib.Size, sib.BlobID)
			}
			isLFS := len(b) >= fakehub.DefaultLFSThreshold
			if (sib.LFS != nil) != isLFS || (isLFS && (sib.LFS.SHA256 != modeltest.SHA256(b) || sib.LFS.Size != int64(len(b)) || sib.LFS.PointerSize < 100)) {
				t.Errorf("%s: lfs %+v, want LFS=%v", sib.RFilename, sib.LFS, isLFS)
			}
		}
	}
}

// TestResolveRedirect: an LFS file is a 302 to the CDN with the linked
// headers; a regular file is served with its blob id as ETag.
func TestResolveRedirect(t *testing.T) {
	s := fakehub.NewServer(fakehub.New())
	defer s.Close()
	m := modeltest.Small()
	sha := s.MustAdd("org/m", fakehub.Repo{Files: m})
	noFollow := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	big := "model-00001-of-00002.safetensors"
	resp, _ := get(t, noFollow, s.URL+"/org/m/resolve/main/"+big)
	if resp.StatusCode != http.StatusFound || !strings.HasPrefix(resp.Header.Get("Location"), s.CDNServer.URL+"/repos/") ||
		resp.Header.Get("X-Linked-Etag") != `"`+modeltest.SHA256(m[big])+`"` || resp.Header.Get("X-Linked-Size") != "2097165" ||
		resp.Header.Get("X-Repo-Commit") != sha {
		t.Errorf("resolve %s: %d %v", big, resp.StatusCode, resp.Header)
	}
	resp, body := get(t, noFollow, s.URL+"/org/m/resolve/"+sha+"/config.json", "Range", "bytes=10-19")
	if resp.StatusCode != http.StatusPartialContent || string(body) != string(m["config.json"][10:20]) || len(resp.Header.Get("ETag")) != 42 {
		t.Errorf("resolve config.json: %d %v", resp.StatusCode, resp.Header)
	}
}

// TestFaults: FailFirst answers the first n matching requests with the
// status; a stall holds the body; a cut ends it early.
func TestFaults(t *testing.T) {
	s := fakehub.NewServer(fakehub.New())
	defer s.Close()
	m := modeltest.Small()
	s.MustAdd("org/m", fakehub.Repo{Files: m})
	u := s.URL + "/org/m/resolve/main/tokenizer.json"

	s.SetFault(fakehub.FailFirst(2, fakehub.Fault{Status: 503, RetryAfter: "3"}, nil))
	for i, want := range []int{503, 503, 200} {
		resp, _ := get(t, http.DefaultClient, u)
		if resp.StatusCode != want || (want == 503 && resp.Header.Get("Retry-After") != "3") {
			t.Errorf("request %d: %d (Retry-After %q), want %d", i, resp.StatusCode, resp.Header.Get("Retry-After"), want)
		}
	}

	s.SetFault(fakehub.FailFirst(1, fakehub.Fault{After: 100, Stall: 300 * time.Millisecond}, nil))
	start := time.Now()
	_, body := get(t, http.DefaultClient, u)
	if d := time.Since(start); d < 300*time.Millisecond || len(body) != len(m["tokenizer.json"]) {
		t.Errorf("stalled request: %v, %d bytes; want ≥300ms and the whole file", d, len(body))
	}

	s.SetFault(fakehub.FailFirst(1, fakehub.Fault{After: 100, Cut: true}, nil))
	resp, err := http.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err == nil || len(b) != 100 {
		t.Errorf("cut request: %d bytes, %v; want 100 and an error", len(b), err)
	}
}
