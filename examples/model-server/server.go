package main

import (
	"encoding/json"
	"net/http"
	"sync/atomic"

	"github.com/mlplane/mlplane/internal/api"
)

// Env is what the server reports of its environment; nil is unset, which
// differs from empty for NVIDIA_VISIBLE_DEVICES (the NVIDIA runtime reads
// empty as "no GPU", unset as "all GPUs" in legacy CUDA images).
type Env struct {
	NvidiaVisibleDevices *string
	GPUMemoryMiB         *string
	PodName              *string
	PodNamespace         *string
}

// EnvFrom reads Env with lookup (os.LookupEnv).
func EnvFrom(lookup func(string) (string, bool)) Env {
	get := func(k string) *string {
		if v, ok := lookup(k); ok {
			return &v
		}
		return nil
	}
	return Env{
		NvidiaVisibleDevices: get(api.EnvNvidiaVisibleDevices),
		GPUMemoryMiB:         get(api.EnvGPUMemoryMiB),
		PodName:              get(EnvPodName),
		PodNamespace:         get(EnvPodNamespace),
	}
}

// Response is the document GET / answers. Its fields are in the order of
// their JSON keys, sorted, and Files in path order: the same model and
// environment give the same bytes.
type Response struct {
	// Bytes is the sum of the file sizes.
	Bytes int64 `json:"bytes"`
	// Digest is Model.Digest.
	Digest string `json:"digest"`
	Files  []File `json:"files"`
	// GPUMemoryMiB is MLPLANE_GPU_MEMORY_MIB (null: unset).
	GPUMemoryMiB *string `json:"gpuMemoryMiB"`
	// Namespace is POD_NAMESPACE (null: unset).
	Namespace *string `json:"namespace"`
	// NvidiaVisibleDevices is NVIDIA_VISIBLE_DEVICES (null: unset).
	NvidiaVisibleDevices *string `json:"nvidiaVisibleDevices"`
	// Pod is POD_NAME (null: unset).
	Pod      *string `json:"pod"`
	Revision string  `json:"revision"`
	URI      string  `json:"uri"`
}

// File is one model file as read from disk.
type File struct {
	Path   string `json:"path"`
	SHA256 string `json:"sha256"`
	Size   int64  `json:"size"`
}

// Server serves /, /healthz and /readyz.
type Server struct {
	env Env
	mux *http.ServeMux
	// body is the encoded Response once the model is read.
	body atomic.Pointer[[]byte]
}

// NewServer returns a Server that is not ready until SetModel.
func NewServer(env Env) *Server {
	s := &Server{env: env, mux: http.NewServeMux()}
	s.mux.HandleFunc("GET /{$}", s.root)
	s.mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok\n")) })
	s.mux.HandleFunc("GET /readyz", s.readyz)
	return s
}

// SetModel makes the server ready, answering with m.
func (s *Server) SetModel(m *Model) {
	b := Encode(NewResponse(m, s.env))
	s.body.Store(&b)
}

// NewResponse is the document for m and env.
func NewResponse(m *Model, env Env) Response {
	r := Response{
		Bytes:                m.Bytes,
		Digest:               m.Digest,
		Files:                make([]File, 0, len(m.Files)),
		GPUMemoryMiB:         env.GPUMemoryMiB,
		Namespace:            env.PodNamespace,
		NvidiaVisibleDevices: env.NvidiaVisibleDevices,
		Pod:                  env.PodName,
		Revision:             m.Revision,
		URI:                  m.URI,
	}
	for _, f := range m.Files {
		r.Files = append(r.Files, File{Path: f.Path, SHA256: f.SHA256, Size: f.Size})
	}
	return r
}

// Encode is r as indented JSON with a final newline, as GET / sends it.
func Encode(r Response) []byte {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		panic(err) // strings and numbers only
	}
	return append(b, '\n')
}

// ServeHTTP routes to /, /healthz and /readyz.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.mux.ServeHTTP(w, r) }

func (s *Server) root(w http.ResponseWriter, _ *http.Request) {
	b := s.body.Load()
	if b == nil {
		http.Error(w, "model not read yet", http.StatusServiceUnavailable)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(*b)
}

func (s *Server) readyz(w http.ResponseWriter, _ *http.Request) {
	if s.body.Load() == nil {
		http.Error(w, "model not read yet", http.StatusServiceUnavailable)
		return
	}
	_, _ = w.Write([]byte("ok\n"))
}
