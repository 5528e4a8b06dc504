package hf

import (
	"net/http"
	"net/url"
	"testing"

	"github.com/mlplane/mlplane/internal/modelload"
)

func reqTo(t *testing.T, u string) *http.Request {
	t.Helper()
	p, err := url.Parse(u)
	if err != nil {
		t.Fatal(err)
	}
	return &http.Request{URL: p, Header: http.Header{"Authorization": {"Bearer x"}}}
}

// TestRedirectPolicy: no https → plain http downgrade except to loopback;
// the metadata client stops at another host; the shared client's policy
// (Authorization dropped across hosts) still applies.
func TestRedirectPolicy(t *testing.T) {
	base := modelload.NewHTTPClient(nil)
	follow, meta := withRedirectPolicy(base, false), withRedirectPolicy(base, true)
	hub := reqTo(t, "https://huggingface.co/org/m/resolve/x/f")
	for _, c := range []struct {
		to                string
		followOK          bool
		metaStops, noAuth bool
	}{
		{to: "https://cdn-lfs.hf.co/repos/a/b/c", followOK: true, metaStops: true, noAuth: true},
		{to: "https://huggingface.co/new/m/resolve/x/f", followOK: true},
		{to: "http://cdn.example.com/x", followOK: false, metaStops: true},
		{to: "http://127.0.0.1:8080/x", followOK: true, metaStops: true, noAuth: true},
	} {
		r := reqTo(t, c.to)
		err := follow.CheckRedirect(r, []*http.Request{hub})
		if (err == nil) != c.followOK {
			t.Errorf("follow %s: %v; want ok=%v", c.to, err, c.followOK)
		}
		if c.followOK && c.noAuth != (r.Header.Get("Authorization") == "") {
			t.Errorf("follow %s: Authorization %q; want dropped=%v", c.to, r.Header.Get("Authorization"), c.noAuth)
		}
		err = meta.CheckRedirect(reqTo(t, c.to), []*http.Request{hub})
		if c.metaStops != (err == http.ErrUseLastResponse) {
			t.Errorf("meta %s: %v; want stop=%v", c.to, err, c.metaStops)
		}
	}
}
