package mutate

import (
	"bytes"
	"encoding/json"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"sigs.k8s.io/randfill"
)

// TestAppendContainer: containers, volume mounts and security contexts
// filled at random, with every field or only the ones written by hand, are
// written byte for byte as json.Marshal writes them.
func TestAppendContainer(t *testing.T) {
	if !handWritable {
		t.Fatal("k8s.io/api's Container and the structs in it changed: update containerjson.go, or every container goes through json.Marshal")
	}
	f := randfill.NewWithSeed(3).NilChance(0.3).NumElements(0, 3).Funcs(
		func(q *resource.Quantity, c randfill.Continue) {
			*q = *resource.NewQuantity(c.Int63n(1<<40), []resource.Format{resource.DecimalSI, resource.BinarySI}[c.Intn(2)])
		},
		// Strings with what encoding/json escapes.
		func(s *string, c randfill.Continue) {
			*s = []string{"", "a", "<&>", "\u2028\"\\", "é\x7f\x01", c.String(8)}[c.Intn(6)]
		},
	)
	check := func(what string, got []byte, err error, v any) {
		t.Helper()
		want, werr := json.Marshal(v)
		if err != nil || werr != nil || !bytes.Equal(got, want) {
			t.Fatalf("%s:\nhand     %s (%v)\njson.Marshal %s (%v)", what, got, err, want, werr)
		}
	}
	hand := 0
	for i := range 2000 {
		var c corev1.Container
		f.Fill(&c)
		if i%2 == 0 { // only what appendContainer writes itself
			c.ResizePolicy, c.RestartPolicyRules, c.VolumeDevices = nil, nil, nil
			c.LivenessProbe, c.ReadinessProbe, c.StartupProbe, c.Lifecycle = nil, nil, nil, nil
			for j := range c.Env {
				c.Env[j].ValueFrom = nil
			}
			if s := c.SecurityContext; s != nil && i%4 == 0 {
				s.SELinuxOptions, s.WindowsOptions, s.AppArmorProfile = nil, nil, nil
			}
			hand++
		}
		got, err := appendContainer(nil, &c)
		check("container", got, err, &c)
		got, err = AppendPatch(nil, []Op{{Op: "add", Path: "/spec/containers", Value: []*corev1.Container{&c, nil}}})
		check("containers in a patch", got, err, []Op{{Op: "add", Path: "/spec/containers", Value: []*corev1.Container{&c, nil}}})
		var m corev1.VolumeMount
		f.Fill(&m)
		got, err = AppendPatch(nil, []Op{{Op: "add", Path: "/x", Value: &m}, {Op: "add", Path: "/y", Value: []*corev1.VolumeMount{&m}}})
		check("volume mounts in a patch", got, err, []Op{{Op: "add", Path: "/x", Value: &m}, {Op: "add", Path: "/y", Value: []*corev1.VolumeMount{&m}}})
	}
	if hand < 1000 {
		t.Fatalf("only %d containers on the hand-written path", hand)
	}
}
