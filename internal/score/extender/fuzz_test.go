package extender

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"testing"
)

// FuzzHandler: whatever a client sends, every verb answers 200 or 400 and
// never panics.
func FuzzHandler(f *testing.F) {
	f.Add(PathFilter, []byte(`{"Pod":{"metadata":{"uid":"u","annotations":{"mlplane.io/gpu-memory":"20Gi"}}},"NodeNames":["n","x"]}`))
	f.Add(PathPrioritize, []byte(`{"Pod":{"metadata":{"annotations":{"mlplane.io/gpu-memory":"1","mlplane.io/gpu-count":"64"}}},"NodeNames":["n"]}`))
	f.Add(PathFilter, []byte(`{"Pod":null,"Nodes":{"items":[{"metadata":{"name":"n"}}]}}`))
	f.Add(PathBind, []byte(`{"PodName":"p","PodNamespace":"ml","Node":"n"}`))
	f.Add(PathBind, []byte(`[]`))
	f.Fuzz(func(t *testing.T, path string, body []byte) {
		if path != PathFilter && path != PathPrioritize && path != PathBind {
			path = PathFilter
		}
		fx := newFixture(t, gpuNode("n", 2, 80))
		rec := httptest.NewRecorder()
		fx.ext.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodPost, path, bytes.NewReader(body)))
		if rec.Code != http.StatusOK && rec.Code != http.StatusBadRequest {
			t.Fatalf("%s answered %d: %s", path, rec.Code, rec.Body.String())
		}
	})
}
