package cluster

import "testing"

func TestPortsAreDistinct(t *testing.T) {
	c := New(Options{})
	seen := map[int]string{}
	for i := range 200 {
		name := string(rune('a'+i%26)) + string(rune('a'+i/26))
		p, err := c.port(name)
		if err != nil {
			t.Fatal(err)
		}
		if other, dup := seen[p]; dup {
			t.Fatalf("port %d given to %s and %s", p, other, name)
		}
		seen[p] = name
		if again, _ := c.port(name); again != p {
			t.Fatalf("port(%s) changed from %d to %d", name, p, again)
		}
	}
}
