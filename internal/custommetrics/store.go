package custommetrics

import (
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/types"
)

// Store keeps the latest successful scrape of each node: the time it was
// taken and its pods' figures. It is safe for concurrent use.
type Store struct {
	mu    sync.RWMutex
	nodes map[string]nodeScrape
	// node of each pod's latest scrape
	pods map[types.UID]string
}

type nodeScrape struct {
	at   time.Time
	pods map[types.UID]*PodGPU
}

// NewStore returns an empty Store.
func NewStore() *Store {
	return &Store{nodes: map[string]nodeScrape{}, pods: map[types.UID]string{}}
}

// Set replaces what node's agent said with pods, scraped at at. The Store
// keeps pods; the caller must not change them afterwards.
func (s *Store) Set(node string, at time.Time, pods map[types.UID]*PodGPU) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.dropLocked(node)
	s.nodes[node] = nodeScrape{at: at, pods: pods}
	for uid := range pods {
		s.pods[uid] = node
	}
}

// Retain forgets every node for which keep is false (Nodes deleted, or
// whose agent no longer publishes where to scrape it).
func (s *Store) Retain(keep func(node string) bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for node := range s.nodes {
		if !keep(node) {
			s.dropLocked(node)
		}
	}
}

func (s *Store) dropLocked(node string) {
	old, ok := s.nodes[node]
	if !ok {
		return
	}
	for uid := range old.pods {
		if s.pods[uid] == node {
			delete(s.pods, uid)
		}
	}
	delete(s.nodes, node)
}

// Pod returns the latest figures of the pod with uid and when they were
// scraped, if they were scraped at or after notBefore.
func (s *Store) Pod(uid types.UID, notBefore time.Time) (p PodGPU, at time.Time, ok bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	node, ok := s.pods[uid]
	if !ok {
		return PodGPU{}, time.Time{}, false
	}
	n := s.nodes[node]
	if n.at.Before(notBefore) {
		return PodGPU{}, time.Time{}, false
	}
	return *n.pods[uid], n.at, true
}

// Counts returns how many nodes and pods the Store holds figures of that
// were scraped at or after notBefore.
func (s *Store) Counts(notBefore time.Time) (nodes, pods int) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	for _, n := range s.nodes {
		if !n.at.Before(notBefore) {
			nodes++
			pods += len(n.pods)
		}
	}
	return nodes, pods
}
