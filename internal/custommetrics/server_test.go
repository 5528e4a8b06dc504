package custommetrics

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	apiregistrationv1 "k8s.io/kube-aggregator/pkg/apis/apiregistration/v1"
	aggfake "k8s.io/kube-aggregator/pkg/client/clientset_generated/clientset/fake"
)

func parse(t *testing.T, args ...string) *Options {
	t.Helper()
	o := NewOptions()
	fs := pflag.NewFlagSet("test", pflag.ContinueOnError)
	o.AddFlags(fs)
	if err := fs.Parse(args); err != nil {
		t.Fatal(err)
	}
	return o
}

func TestOptionsValidate(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--cert-dir=/tls"}, ""},
		{[]string{"--tls-cert-file=/a.crt", "--tls-private-key-file=/a.key"}, ""},
		{[]string{"--cert-mode=self-signed", "--cert-dir=/tls", "--interval=2s", "--scrape-timeout=1s"}, ""},
		{nil, "--cert-mode cert-manager needs --cert-dir (where cert-manager's Secret is mounted) or --tls-cert-file and --tls-private-key-file"},
		{[]string{"--cert-mode=self-signed"}, "--cert-mode self-signed needs --cert-dir, where it writes tls.crt and tls.key, and no --tls-cert-file or --tls-private-key-file"},
		// every problem at once
		{[]string{"--cert-dir=/tls", "--interval=0s", "--scrape-timeout=-1s", "--cert-mode=acme"},
			"--interval 0s: want a positive duration\n" +
				"--scrape-timeout -1s: want a positive duration less than --interval 0s\n" +
				`--cert-mode "acme": want one of cert-manager, self-signed`},
		{[]string{"--cert-dir=/tls", "--interval=5s", "--scrape-timeout=5s"}, "--scrape-timeout 5s: want a positive duration less than --interval 5s"},
	} {
		err := parse(t, tc.args...).Validate()
		got := ""
		if err != nil {
			got = err.Error()
		}
		if got != tc.want {
			t.Errorf("%q:\n got %q\nwant %q", tc.args, got, tc.want)
		}
	}
}

func TestFlagDefaults(t *testing.T) {
	o := parse(t, "--cert-dir=/tls")
	if o.Interval != 15*time.Second || o.ScrapeTimeout != 5*time.Second || o.base.SecureServing.BindPort != DefaultSecurePort {
		t.Errorf("defaults: interval %s, timeout %s, port %d", o.Interval, o.ScrapeTimeout, o.base.SecureServing.BindPort)
	}
	// --cert-dir holds tls.crt and tls.key, as the webhook's and as
	// cert-manager's Secret mounts them.
	if o.base.SecureServing.ServerCert.PairName != "tls" {
		t.Errorf("pair name %q", o.base.SecureServing.ServerCert.PairName)
	}
	var help bytes.Buffer
	fs := pflag.NewFlagSet("test", pflag.ContinueOnError)
	fs.SetOutput(&help)
	NewOptions().AddFlags(fs)
	fs.PrintDefaults()
	for _, f := range []string{"--interval", "--scrape-timeout", "--cert-mode", "--cert-dir", "--kubeconfig", "--secure-port", "--requestheader-client-ca-file", "--authentication-kubeconfig"} {
		if !strings.Contains(help.String(), f+" ") {
			t.Errorf("no flag %s", f)
		}
	}
}

func TestAPIServiceBundle(t *testing.T) {
	ctx := context.Background()
	client := aggfake.NewClientset(&apiregistrationv1.APIService{
		ObjectMeta: metav1.ObjectMeta{Name: "v1beta2.custom.metrics.k8s.io"},
		Spec:       apiregistrationv1.APIServiceSpec{CABundle: []byte("old")},
	})
	b := APIServiceBundle{Client: client, Names: APIServiceNames}
	changed, err := b.UpdateCABundle(ctx, func(old []byte) []byte { return append([]byte("new+"), old...) })
	// v1beta2 is updated; v1beta1 does not exist yet, which the certificate
	// keeper treats as "retry later".
	if !changed || !apierrors.IsNotFound(err) {
		t.Fatalf("changed %v, err %v; want true and NotFound", changed, err)
	}
	if want := `APIService v1beta1.custom.metrics.k8s.io: apiservices.apiregistration.k8s.io "v1beta1.custom.metrics.k8s.io" not found`; err.Error() != want {
		t.Errorf("error %q, want %q", err, want)
	}
	got, err := client.ApiregistrationV1().APIServices().Get(ctx, "v1beta2.custom.metrics.k8s.io", metav1.GetOptions{})
	if err != nil || string(got.Spec.CABundle) != "new+old" {
		t.Fatalf("caBundle %q, %v", got.Spec.CABundle, err)
	}
	if changed, _ = b.UpdateCABundle(ctx, func(old []byte) []byte { return old }); changed {
		t.Error("an unchanged caBundle was written")
	}
}
