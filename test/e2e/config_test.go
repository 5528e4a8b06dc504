package e2e

// The installable configuration (config/, docs/install.md) on the real API
// server of the local cluster: every overlay is accepted; the webhook
// serves a certificate issued with cert-manager's code from the very
// Certificate objects in config/, and the API server trusts it; the
// self-signed mode bootstraps, and rotates without a failed admission.
//
// What cannot run here: cert-manager's controller and cainjector (not Go
// modules one can build), so this suite does their two jobs with
// cert-manager's own PKI code and by copying ca.crt into the caBundle.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	cmapi "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	"github.com/cert-manager/cert-manager/pkg/util/pki"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	aggregator "k8s.io/kube-aggregator/pkg/client/clientset_generated/clientset"
	"sigs.k8s.io/e2e-framework/klient/wait"
	"sigs.k8s.io/e2e-framework/pkg/envconf"
	"sigs.k8s.io/e2e-framework/pkg/features"

	"github.com/mlplane/mlplane/internal/api"
	"github.com/mlplane/mlplane/internal/certs"
	"github.com/mlplane/mlplane/internal/cluster"
	"github.com/mlplane/mlplane/internal/custommetrics"
	"github.com/mlplane/mlplane/internal/manifests"
)

func TestConfig(t *testing.T) {
	install := features.New("config/ installs on a real API server").
		Assess("every overlay builds with bin/kustomize and every object is accepted by a server-side dry run", func(ctx context.Context, t *testing.T, cfg *envconf.Config) context.Context {
			RequireLocal(ctx, t) // it installs CRDs
			installCRDs(ctx, t, cfg)
			for _, overlay := range manifests.Overlays {
				t.Run(overlay, func(t *testing.T) {
					objs := decodeObjects(t, kustomizeBuild(t, overlay))
					// The suite registered its own MutatingWebhookConfiguration
					// mlplane-webhook (with a URL): applied over it, the
					// shipped one would merge into an object with both a URL
					// and a service. The dry run checks the shipped object
					// under another name, as it would be created on a cluster.
					var docs []string
					for _, o := range objs {
						// A dry run creates no namespace, and objects in
						// one it has not created are refused: the
						// namespaces themselves are created first.
						if o.GetKind() == "Namespace" {
							if out, err := Kubectl(ctx, cfg, "", "create", "namespace", o.GetName()); err != nil && !strings.Contains(out, "AlreadyExists") {
								t.Fatal(err)
							}
						}
						if o.GetKind() == "MutatingWebhookConfiguration" {
							o = o.DeepCopy()
							o.SetName(o.GetName() + "-dry-run")
						}
						docs = append(docs, toYAML(t, o.Object))
					}
					out, err := Kubectl(ctx, cfg, strings.Join(docs, "---\n"), "apply", "--server-side", "--dry-run=server",
						"--field-manager=mlplane-install", "-f", "-")
					if err != nil {
						t.Fatal(err)
					}
					accepted := 0
					for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
						if strings.HasSuffix(line, "serverside-applied (server dry run)") {
							accepted++
						}
					}
					if accepted != len(objs) {
						t.Fatalf("%d of %d objects accepted:\n%s", accepted, len(objs), out)
					}
					t.Logf("%s: %d objects accepted", overlay, accepted)
				})
			}
			return ctx
		}).
		Assess("the Deployments and the DaemonSet pass only flags the binaries define", func(ctx context.Context, t *testing.T, cfg *envconf.Config) context.Context {
			// overlays/local: the self-signed install plus the custom
			// metrics API server, self-signed too.
			objs := decodeObjects(t, kustomizeBuild(t, "overlays/local"))
			for _, o := range objs {
				if o.GetKind() != "Deployment" && o.GetKind() != "DaemonSet" {
					continue
				}
				containers, _, _ := unstructured.NestedSlice(o.Object, "spec", "template", "spec", "containers")
				for _, c := range containers {
					image, _ := c.(map[string]any)["image"].(string)
					bin := strings.TrimSuffix(filepath.Base(image), ":"+imageTag(image))
					if !strings.HasPrefix(image, "ghcr.io/mlplane/") {
						continue // the upstream kube-scheduler
					}
					args, _ := c.(map[string]any)["args"].([]any)
					checkFlags(t, bin, args)
				}
			}
			return ctx
		})

	certManager := features.New("webhook TLS from cert-manager's Certificate objects").
		Assess("the Issuers and Certificates of config/default are accepted with cert-manager's CRDs", func(ctx context.Context, t *testing.T, cfg *envconf.Config) context.Context {
			RequireLocal(ctx, t)
			installCRDs(ctx, t, cfg)
			var issuerCerts []*unstructured.Unstructured
			for _, o := range decodeObjects(t, kustomizeBuild(t, "default")) {
				if o.GetAPIVersion() == "cert-manager.io/v1" {
					issuerCerts = append(issuerCerts, o)
				}
			}
			if len(issuerCerts) != 7 {
				t.Fatalf("config/default has %d cert-manager objects, want 2 Issuers and 5 Certificates (the webhook's CA and serving, the extender's serving and client, the custom metrics API server's serving)", len(issuerCerts))
			}
			var docs []string
			for _, o := range issuerCerts {
				docs = append(docs, toYAML(t, o.Object))
			}
			// Created for real (cert-manager's controller is not here to act
			// on them), then removed.
			if _, err := Kubectl(ctx, cfg, strings.Join(docs, "---\n"), "apply", "--server-side", "--field-manager=mlplane-install", "-f", "-"); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() {
				_, _ = Kubectl(context.Background(), cfg, strings.Join(docs, "---\n"), "delete", "--ignore-not-found", "-f", "-")
			})
			out, err := Kubectl(ctx, cfg, "", "get", "-n", api.DefaultNamespace, "issuers.cert-manager.io,certificates.cert-manager.io", "-o", "name")
			if err != nil {
				t.Fatal(err)
			}
			for _, want := range []string{"issuer.cert-manager.io/" + certs.SelfSignedIssuerName, "issuer.cert-manager.io/" + certs.CAIssuerName,
				"certificate.cert-manager.io/" + certs.CACertificateName, "certificate.cert-manager.io/" + certs.ServingCertificateName,
				"certificate.cert-manager.io/" + certs.ExtenderServingCertificateName, "certificate.cert-manager.io/" + certs.ExtenderClientCertificateName,
				"certificate.cert-manager.io/" + certs.MetricsAPIServer.Certificate} {
				if !strings.Contains(out, want) {
					t.Errorf("%s not stored; have:\n%s", want, out)
				}
			}
			return ctx
		}).
		Assess("a Secret issued from those Certificates with cert-manager's PKI code is served, and its ca.crt as caBundle is trusted", func(ctx context.Context, t *testing.T, cfg *envconf.Config) context.Context {
			c := RequireLocal(ctx, t)
			cs := Clientset(t, cfg)
			objs := decodeObjects(t, kustomizeBuild(t, "default"))
			caCrt := certificateOf(t, objs, certs.CACertificateName)
			servingCrt := certificateOf(t, objs, certs.ServingCertificateName)
			// The API server reaches local webhooks at 127.0.0.1, so the one
			// name the Service DNS names cannot cover is added.
			certs.AddHosts(servingCrt, "127.0.0.1")
			ca, err := certs.Issue(caCrt, nil)
			if err != nil {
				t.Fatal(err)
			}
			serving, err := certs.Issue(servingCrt, ca)
			if err != nil {
				t.Fatal(err)
			}
			// The Secret cert-manager would write, as cert-manager writes it;
			// the webhook's cert dir holds what the kubelet would mount.
			sec := &corev1.Secret{
				ObjectMeta: metav1.ObjectMeta{Name: servingCrt.Spec.SecretName, Namespace: api.DefaultNamespace,
					Annotations: map[string]string{cmapi.CertificateNameKey: servingCrt.Name}},
				Type: corev1.SecretTypeTLS,
				Data: serving.SecretData(),
			}
			deleteSecret(ctx, t, cs, sec.Name)
			sec, err = cs.CoreV1().Secrets(api.DefaultNamespace).Create(ctx, sec, metav1.CreateOptions{})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { deleteSecret(context.Background(), t, cs, sec.Name) })
			certDir := filepath.Join(c.Dir(), "certmanager-webhook-certs")
			if _, err := certs.WriteFiles(certDir, sec.Data); err != nil {
				t.Fatal(err)
			}

			w, err := c.StartWebhookInstance(ctx, "webhook-certmanager", "--cert-dir="+certDir, "--namespace="+api.DefaultNamespace)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = c.StopComponent(w.Name) })

			// Served: the very certificate, for the Service's DNS name.
			got := servedCert(ctx, t, w.Addr, sec.Data[certs.KeyCA], "mlplane-webhook.mlplane-system.svc")
			if !got.Equal(serving.Cert) {
				t.Fatalf("webhook serves %s (serial %s), want the issued certificate (serial %s)", got.Subject, got.SerialNumber, serving.Cert.SerialNumber)
			}
			// cainjector's job: the Secret's ca.crt into the caBundle of the
			// configuration config/default installs (inject-ca-from).
			mwc := shippedWebhookConfiguration(t, "default", "e2e-certmanager-webhook", w.URL(), sec.Data[certs.KeyCA])
			if got := mwc.Annotations["cert-manager.io/inject-ca-from"]; got != api.DefaultNamespace+"/"+certs.ServingCertificateName {
				t.Fatalf("inject-ca-from = %q, want %s/%s", got, api.DefaultNamespace, certs.ServingCertificateName)
			}
			nsEnabled, nsPlain := scopedNamespaces(ctx, t, cfg, mwc, "cm-ns", "cm-pod")
			registerWebhookConfiguration(ctx, t, cs, mwc)

			expectMutatedBy(ctx, t, cs, w, nsEnabled, "by-namespace", nil)
			expectMutatedBy(ctx, t, cs, w, nsPlain, "by-label", map[string]string{api.LabelInject: api.PodInjectTrue})
			expectNotMutated(ctx, t, cs, nsEnabled, "opted-out", map[string]string{api.LabelInject: api.PodInjectFalse})
			return ctx
		})

	metricsCertManager := features.New("custom metrics API TLS from cert-manager's Certificate objects").
		Assess("the server serves a certificate issued from config/default's Certificate, and the aggregator trusts it through the caBundle cainjector would inject", func(ctx context.Context, t *testing.T, cfg *envconf.Config) context.Context {
			c := RequireLocal(ctx, t)
			RequireComponent(ctx, t, cluster.MetricsAPIServer)
			agg, err := aggregator.NewForConfig(c.RESTConfig())
			if err != nil {
				t.Fatal(err)
			}
			objs := decodeObjects(t, kustomizeBuild(t, "default"))
			for _, name := range custommetrics.APIServiceNames {
				o := manifests.Find(objs, "APIService", "", name)
				if o == nil {
					t.Fatalf("config/default has no APIService %s", name)
				}
				if got, want := o.GetAnnotations()["cert-manager.io/inject-ca-from"], api.DefaultNamespace+"/"+certs.MetricsAPIServer.Certificate; got != want {
					t.Errorf("APIService %s: inject-ca-from = %q, want %q", name, got, want)
				}
			}
			// Signed by the CA Issuer's CA, as cert-manager would.
			ca, err := certs.Issue(certificateOf(t, objs, certs.CACertificateName), nil)
			if err != nil {
				t.Fatal(err)
			}
			serving, err := certs.Issue(certificateOf(t, objs, certs.MetricsAPIServer.Certificate), ca)
			if err != nil {
				t.Fatal(err)
			}
			dir := filepath.Join(c.Dir(), "certmanager-metrics-apiserver-certs")
			if _, err := certs.WriteFiles(dir, serving.SecretData()); err != nil {
				t.Fatal(err)
			}
			// cainjector's job: ca.crt into both APIServices.
			for _, name := range custommetrics.APIServiceNames {
				s, err := agg.ApiregistrationV1().APIServices().Get(ctx, name, metav1.GetOptions{})
				if err != nil {
					t.Fatal(err)
				}
				s.Spec.CABundle = serving.CAPEM
				if _, err := agg.ApiregistrationV1().APIServices().Update(ctx, s, metav1.UpdateOptions{}); err != nil {
					t.Fatal(err)
				}
			}
			if err := c.StopComponent(cluster.MetricsAPIServer); err != nil {
				t.Fatal(err)
			}
			// Back to the suite's self-signed server, which puts its CA back.
			t.Cleanup(func() {
				_ = c.StopComponent(cluster.MetricsAPIServer)
				if err := c.StartMetricsAPIServer(context.Background(), cluster.MetricsAPIServerOptions{}); err != nil {
					t.Errorf("restarting the self-signed metrics API server: %v", err)
				}
			})
			if err := c.StartMetricsAPIServer(ctx, cluster.MetricsAPIServerOptions{CertDir: dir}); err != nil {
				t.Fatal(err)
			}
			svc := certs.MetricsAPIServer.Service + "." + api.DefaultNamespace + ".svc"
			if got := servedCert(ctx, t, c.MetricsAPIServerAddr(), serving.CAPEM, svc); !got.Equal(serving.Cert) {
				t.Fatalf("the server serves %s (serial %s), want the issued certificate (serial %s)", got.Subject, got.SerialNumber, serving.Cert.SerialNumber)
			}
			// Through the aggregator, which checks the certificate for the
			// Service's name against the caBundle.
			path := "/apis/custom.metrics.k8s.io/v1beta2/namespaces/" + api.DefaultNamespace + "/pods/*/" + custommetrics.MetricUtilization
			var last error
			if err := wait.For(func(ctx context.Context) (bool, error) {
				_, last = Kubectl(ctx, cfg, "", "get", "--raw", path)
				return last == nil, nil
			}, wait.WithContext(ctx), wait.WithTimeout(ShortWait), wait.WithInterval(500*time.Millisecond)); err != nil {
				t.Fatalf("kubectl get --raw %s through the aggregator: %v", path, last)
			}
			return ctx
		}).Feature()

	selfSigned := features.New("self-signed mode: bootstrap and rotation").
		Assess("two replicas fill the caBundle, serve, and a forced rotation fails no admission", func(ctx context.Context, t *testing.T, cfg *envconf.Config) context.Context {
			c := RequireLocal(ctx, t)
			cs := Clientset(t, cfg)
			const cfgName = "e2e-selfsigned-webhook"
			for _, name := range []string{certs.SecretName, certs.ExtenderSecretName, certs.ExtenderClientSecretName} {
				deleteSecret(ctx, t, cs, name)
			}
			_ = cs.CoordinationV1().Leases(api.DefaultNamespace).Delete(ctx, certs.LeaseName, metav1.DeleteOptions{})
			t.Cleanup(func() {
				for _, name := range []string{certs.SecretName, certs.ExtenderSecretName, certs.ExtenderClientSecretName} {
					deleteSecret(context.Background(), t, cs, name)
				}
				_ = cs.CoordinationV1().Leases(api.DefaultNamespace).Delete(context.Background(), certs.LeaseName, metav1.DeleteOptions{})
			})

			// The configuration the self-signed overlay installs: no caBundle.
			mwc := shippedWebhookConfiguration(t, "overlays/self-signed", cfgName, "", nil)
			if _, ok := mwc.Annotations["cert-manager.io/inject-ca-from"]; ok {
				t.Fatal("the self-signed overlay still asks cainjector for the caBundle")
			}
			nsEnabled, nsPlain := scopedNamespaces(ctx, t, cfg, mwc, "ss-ns", "ss-pod")

			// The replicas run as the ServiceAccount mlplane-webhook with
			// exactly the overlay's RBAC: what it grants is enough.
			kubeconfig := webhookIdentity(ctx, t, c, cfg, cs, "overlays/self-signed", cfgName)

			// Two replicas, each with its own cert dir, as two pods would be.
			// They serve before the configuration exists (the leader retries
			// the caBundle); then it is registered, pointing at replica 0.
			var replicas []cluster.WebhookInstance
			for i := range 2 {
				w, err := c.StartWebhookInstance(ctx, fmt.Sprintf("webhook-selfsigned-%d", i),
					"--cert-mode=self-signed", "--cert-dir="+filepath.Join(c.Dir(), fmt.Sprintf("selfsigned-certs-%d", i)),
					"--namespace="+api.DefaultNamespace, "--webhook-config-name="+cfgName,
					"--cert-hosts=127.0.0.1", "--cert-sync-interval=1s", "--kubeconfig="+kubeconfig)
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { _ = c.StopComponent(w.Name) })
				replicas = append(replicas, w)
			}
			primary := replicas[0]
			url := primary.URL()
			for i := range mwc.Webhooks {
				mwc.Webhooks[i].ClientConfig = admissionregistrationv1.WebhookClientConfig{URL: &url}
			}
			registerWebhookConfiguration(ctx, t, cs, mwc)

			// Bootstrap: the caBundle is the Secret's CA, in both entries.
			ca := waitCABundle(ctx, t, cs, cfgName, nil)
			for _, w := range replicas {
				servedCert(ctx, t, w.Addr, pemOf(ca), "mlplane-webhook.mlplane-system.svc")
			}
			lease, err := cs.CoordinationV1().Leases(api.DefaultNamespace).Get(ctx, certs.LeaseName, metav1.GetOptions{})
			if err != nil || lease.Spec.HolderIdentity == nil || *lease.Spec.HolderIdentity == "" {
				t.Fatalf("Lease %s has no holder: %v", certs.LeaseName, err)
			}
			// The same CA issued the extender's serving and client
			// certificates, into the Secrets the extender and the
			// mlplane-scheduler mount, with the overlay's RBAC.
			for _, name := range []string{certs.ExtenderSecretName, certs.ExtenderClientSecretName} {
				var sec *corev1.Secret
				if err := wait.For(func(ctx context.Context) (bool, error) {
					var err error
					sec, err = cs.CoreV1().Secrets(api.DefaultNamespace).Get(ctx, name, metav1.GetOptions{})
					return err == nil, nil
				}, wait.WithContext(ctx), wait.WithTimeout(ShortWait), wait.WithInterval(200*time.Millisecond)); err != nil {
					t.Fatalf("Secret %s not written: %v", name, err)
				}
				kp, err := certs.ParseKeyPair(sec.Data[certs.KeyCert], sec.Data[certs.KeyKey], sec.Data[certs.KeyCA])
				if err != nil || kp.Cert.CheckSignatureFrom(ca) != nil {
					t.Errorf("Secret %s: %v, or not signed by the webhook's CA", name, err)
				}
			}
			expectMutatedBy(ctx, t, cs, primary, nsEnabled, "by-namespace", nil)
			expectMutatedBy(ctx, t, cs, primary, nsPlain, "by-label", map[string]string{api.LabelInject: api.PodInjectTrue})

			// Rotation, forced the way an admin would: delete the Secret. A
			// steady stream of pod creations must not see one failure.
			oldServing := servedCert(ctx, t, primary.Addr, pemOf(ca), "mlplane-webhook.mlplane-system.svc")
			var created, failed atomic.Int64
			var firstErr atomic.Value
			stop := make(chan struct{})
			var wg sync.WaitGroup
			wg.Add(1)
			go func() {
				defer wg.Done()
				// A steady 20 pods a second (a rate, not a wait), at most 2000.
				tick := time.NewTicker(50 * time.Millisecond)
				defer tick.Stop()
				for i := 0; i < 2000; i++ {
					select {
					case <-stop:
						return
					case <-tick.C:
					}
					pod := plainPod(nsEnabled, fmt.Sprintf("rotation-%d", i), nil)
					got, err := cs.CoreV1().Pods(nsEnabled).Create(ctx, pod, metav1.CreateOptions{})
					if err == nil && got.Annotations[api.AnnotationStatus] == "" {
						err = fmt.Errorf("pod %s created without mutation", pod.Name)
					}
					if err != nil {
						failed.Add(1)
						firstErr.CompareAndSwap(nil, err.Error())
						continue
					}
					created.Add(1)
				}
			}()
			if err := cs.CoreV1().Secrets(api.DefaultNamespace).Delete(ctx, certs.SecretName, metav1.DeleteOptions{}); err != nil {
				t.Fatal(err)
			}
			newCA := waitCABundle(ctx, t, cs, cfgName, ca)
			var newServing *x509.Certificate
			err = wait.For(func(ctx context.Context) (bool, error) {
				for _, w := range replicas {
					got, err := dialServing(ctx, w.Addr, pemOf(newCA), "mlplane-webhook.mlplane-system.svc")
					if err != nil {
						return false, nil
					}
					if w.Name == primary.Name {
						newServing = got
					}
				}
				return true, nil
			}, wait.WithContext(ctx), wait.WithTimeout(LongWait), wait.WithInterval(200*time.Millisecond))
			if err != nil {
				t.Fatalf("the replicas do not serve a certificate from the new CA: %v", err)
			}
			// A few more admissions on the new certificate, then stop.
			n := created.Load()
			_ = wait.For(func(context.Context) (bool, error) { return created.Load() >= n+5 || failed.Load() > 0, nil },
				wait.WithContext(ctx), wait.WithTimeout(ShortWait), wait.WithInterval(50*time.Millisecond))
			close(stop)
			wg.Wait()
			if f := failed.Load(); f > 0 {
				t.Fatalf("%d of %d admissions failed during the rotation; first: %v", f, f+created.Load(), firstErr.Load())
			}
			if newServing.Equal(oldServing) || created.Load() < 5 {
				t.Fatalf("rotation not observed: serving certificate changed=%v, %d pods admitted", !newServing.Equal(oldServing), created.Load())
			}
			t.Logf("rotation: %d pods admitted and mutated, none failed", created.Load())
			return ctx
		})

	testenv.Test(t, install.Feature(), certManager.Feature(), metricsCertManager, selfSigned.Feature())
}

// webhookIdentity applies the webhook's ServiceAccount and RBAC from the
// rendered overlay (the caBundle ClusterRole's resourceName set to cfgName,
// the configuration this test registers instead of mlplane-webhook), checks
// that it reads no Secret but its own, and writes a kubeconfig that
// authenticates as that ServiceAccount with a bound token.
func webhookIdentity(ctx context.Context, t *testing.T, c *cluster.Cluster, cfg *envconf.Config, cs kubernetes.Interface, overlay, cfgName string) string {
	t.Helper()
	const sa = "mlplane-webhook"
	var docs []string
	for _, o := range decodeObjects(t, kustomizeBuild(t, overlay)) {
		switch o.GetKind() {
		case "ServiceAccount", "Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding":
		default:
			continue
		}
		if !strings.HasPrefix(o.GetName(), sa) {
			continue
		}
		if o.GetKind() == "ClusterRole" && o.GetName() == sa+"-cabundle" {
			rules, _, _ := unstructured.NestedSlice(o.Object, "rules")
			for _, r := range rules {
				r.(map[string]any)["resourceNames"] = []any{cfgName}
			}
			_ = unstructured.SetNestedSlice(o.Object, rules, "rules")
		}
		docs = append(docs, toYAML(t, o.Object))
	}
	if len(docs) != 7 {
		t.Fatalf("%d webhook RBAC objects in config/%s, want 7 (ServiceAccount, 3 roles, 3 bindings)", len(docs), overlay)
	}
	manifest := strings.Join(docs, "---\n")
	if _, err := Kubectl(ctx, cfg, manifest, "apply", "--server-side", "--field-manager=mlplane-e2e", "-f", "-"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = Kubectl(context.Background(), cfg, manifest, "delete", "--ignore-not-found", "-f", "-") })

	// Nobody reads Secrets but its own: ask the authorizer.
	user := "system:serviceaccount:" + api.DefaultNamespace + ":" + sa
	for _, a := range []struct {
		ns, verb, name string
		want           bool
	}{
		{api.DefaultNamespace, "get", certs.SecretName, true},
		{api.DefaultNamespace, "update", certs.SecretName, true},
		{api.DefaultNamespace, "get", "another-secret", false},
		{api.DefaultNamespace, "list", "", false},
		{"kube-system", "get", "any", false},
		{"", "list", "", false},
	} {
		sar, err := cs.AuthorizationV1().SubjectAccessReviews().Create(ctx, &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{
			User: user, Groups: []string{"system:serviceaccounts", "system:serviceaccounts:" + api.DefaultNamespace, "system:authenticated"},
			ResourceAttributes: &authorizationv1.ResourceAttributes{Namespace: a.ns, Verb: a.verb, Resource: "secrets", Name: a.name},
		}}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if sar.Status.Allowed != a.want {
			t.Errorf("%s may %s secret %q in namespace %q: %v, want %v", sa, a.verb, a.name, a.ns, sar.Status.Allowed, a.want)
		}
	}

	tok, err := cs.CoreV1().ServiceAccounts(api.DefaultNamespace).CreateToken(ctx, sa,
		&authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: new(int64(3600))}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	kc, err := clientcmd.LoadFromFile(c.Kubeconfig())
	if err != nil {
		t.Fatal(err)
	}
	for name := range kc.AuthInfos {
		kc.AuthInfos[name] = &clientcmdapi.AuthInfo{Token: tok.Status.Token}
	}
	path := filepath.Join(c.Dir(), "webhook-sa.kubeconfig")
	if err := clientcmd.WriteToFile(*kc, path); err != nil {
		t.Fatal(err)
	}
	return path
}

// binDir is where make build and make tools put binaries and CRDs.
func binDir(t *testing.T) string {
	t.Helper()
	dir, err := cluster.DefaultBinDir()
	if err != nil {
		t.Fatal(err)
	}
	return dir
}

// kustomizeBuild runs bin/kustomize build config/<overlay>.
func kustomizeBuild(t *testing.T, overlay string) string {
	t.Helper()
	root, err := manifests.ConfigDir()
	if err != nil {
		t.Fatal(err)
	}
	kustomize := filepath.Join(binDir(t), "kustomize")
	out, err := exec.Command(kustomize, "build", filepath.Join(root, overlay)).Output()
	if err != nil {
		var stderr []byte
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = ee.Stderr
		}
		t.Fatalf("%s build config/%s: %v\n%s (run make tools)", kustomize, overlay, err, stderr)
	}
	return string(out)
}

func decodeObjects(t *testing.T, rendered string) []*unstructured.Unstructured {
	t.Helper()
	out, err := manifests.Decode([]byte(rendered))
	if err != nil {
		t.Fatalf("decoding rendered objects: %v", err)
	}
	return out
}

// installCRDs installs the CRDs config/ refers to (copied into bin/crds by
// make tools from the cert-manager and prometheus-operator modules) and
// waits until they are served.
func installCRDs(ctx context.Context, t *testing.T, cfg *envconf.Config) {
	t.Helper()
	crds := filepath.Join(binDir(t), "crds")
	for _, dir := range []string{"cert-manager", "prometheus"} {
		if _, err := Kubectl(ctx, cfg, "", "apply", "--server-side", "--field-manager=mlplane-e2e", "-f", filepath.Join(crds, dir)); err != nil {
			t.Fatalf("installing CRDs (make tools copies them into bin/crds): %v", err)
		}
	}
	if _, err := Kubectl(ctx, cfg, "", "wait", "--for=condition=Established", "--timeout=60s",
		"crd/certificates.cert-manager.io", "crd/issuers.cert-manager.io", "crd/servicemonitors.monitoring.coreos.com"); err != nil {
		t.Fatal(err)
	}
}

func imageTag(image string) string {
	if i := strings.LastIndex(image, ":"); i > 0 {
		return image[i+1:]
	}
	return ""
}

// checkFlags fails when args name a flag bin/<bin> does not define (its
// -h output lists them).
func checkFlags(t *testing.T, bin string, args []any) {
	t.Helper()
	path := filepath.Join(binDir(t), bin)
	sub := ""
	if len(args) > 0 {
		if s, _ := args[0].(string); !strings.HasPrefix(s, "-") {
			sub = s
		}
	}
	cmd := exec.Command(path, sub, "-h")
	if sub == "" {
		cmd = exec.Command(path, "-h")
	}
	help, _ := cmd.CombinedOutput() // -h exits non-zero with the flag list
	if len(help) == 0 {
		t.Fatalf("%s %s -h printed nothing (run make build)", path, sub)
	}
	for _, a := range args {
		s, _ := a.(string)
		if !strings.HasPrefix(s, "--") {
			continue
		}
		name := strings.SplitN(strings.TrimPrefix(s, "--"), "=", 2)[0]
		if !bytes.Contains(help, []byte("-"+name+" ")) && !bytes.Contains(help, []byte("-"+name+"\n")) {
			t.Errorf("%s %s: flag --%s is not one of its flags:\n%s", bin, sub, name, help)
		}
	}
}

func certificateOf(t *testing.T, objs []*unstructured.Unstructured, name string) *cmapi.Certificate {
	t.Helper()
	o := manifests.Find(objs, cmapi.CertificateKind, api.DefaultNamespace, name)
	if o == nil {
		t.Fatalf("no Certificate %s in config/default", name)
	}
	var crt cmapi.Certificate
	if err := manifests.Into(o, &crt); err != nil {
		t.Fatal(err)
	}
	return &crt
}

// shippedWebhookConfiguration is the MutatingWebhookConfiguration of an
// overlay, renamed, pointed at url with caBundle (url "" leaves the
// clientConfig alone), and limited to namespaces this test makes (see
// scopedNamespaces), so that the suite's other pods never reach it.
func shippedWebhookConfiguration(t *testing.T, overlay, name, url string, caBundle []byte) *admissionregistrationv1.MutatingWebhookConfiguration {
	t.Helper()
	objs := decodeObjects(t, kustomizeBuild(t, overlay))
	o := manifests.Find(objs, "MutatingWebhookConfiguration", "", certs.WebhookConfigurationName)
	if o == nil {
		t.Fatalf("config/%s has no MutatingWebhookConfiguration %s", overlay, certs.WebhookConfigurationName)
	}
	var mwc admissionregistrationv1.MutatingWebhookConfiguration
	if err := manifests.Into(o, &mwc); err != nil {
		t.Fatal(err)
	}
	mwc.Name = name
	if url != "" {
		for i := range mwc.Webhooks {
			u := url
			mwc.Webhooks[i].ClientConfig = admissionregistrationv1.WebhookClientConfig{URL: &u, CABundle: caBundle}
		}
	}
	return &mwc
}

// scopedNamespaces makes two namespaces, one opted in by label and one
// plain, and adds to every entry of mwc a namespace selector term allowing
// only those two: the shipped selectors still decide which pods go where.
func scopedNamespaces(ctx context.Context, t *testing.T, cfg *envconf.Config, mwc *admissionregistrationv1.MutatingWebhookConfiguration, enabledPrefix, plainPrefix string) (string, string) {
	t.Helper()
	enabled := CreateNamespace(ctx, t, cfg, enabledPrefix, map[string]string{api.LabelInject: api.NamespaceInjectEnabled})
	plain := CreateNamespace(ctx, t, cfg, plainPrefix, nil)
	for i := range mwc.Webhooks {
		sel := mwc.Webhooks[i].NamespaceSelector
		if sel == nil {
			sel = &metav1.LabelSelector{}
		}
		sel.MatchExpressions = append(sel.MatchExpressions, metav1.LabelSelectorRequirement{
			Key: corev1.LabelMetadataName, Operator: metav1.LabelSelectorOpIn, Values: []string{enabled, plain}})
		mwc.Webhooks[i].NamespaceSelector = sel
	}
	return enabled, plain
}

// registerWebhookConfiguration creates mwc, removed when the test ends.
// The API server's admission chain sees it through an informer, a moment
// later: expectMutated retries for that.
func registerWebhookConfiguration(ctx context.Context, t *testing.T, cs kubernetes.Interface, mwc *admissionregistrationv1.MutatingWebhookConfiguration) {
	t.Helper()
	cli := cs.AdmissionregistrationV1().MutatingWebhookConfigurations()
	_ = cli.Delete(ctx, mwc.Name, metav1.DeleteOptions{})
	if _, err := cli.Create(ctx, mwc, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cli.Delete(context.Background(), mwc.Name, metav1.DeleteOptions{}) })
}

func plainPod(ns, name string, labels map[string]string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: labels,
			Annotations: map[string]string{api.AnnotationModelURI: testModelURI}},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "server", Image: testImage}}},
	}
}

// expectMutatedBy creates a pod that must be mutated by webhook instance w
// (its mutated counter grows) and come back mutated. The suite's own
// webhook mutates the same pods, later (configurations are called in name
// order), so the counter is what shows that w, over the TLS under test,
// did it. A new webhook configuration reaches the API server's admission
// chain through an informer, a moment after it is created: until then the
// pod is deleted and created again, within ShortWait.
func expectMutatedBy(ctx context.Context, t *testing.T, cs kubernetes.Interface, w cluster.WebhookInstance, ns, name string, labels map[string]string) {
	t.Helper()
	pods := cs.CoreV1().Pods(ns)
	var last string
	err := wait.For(func(ctx context.Context) (bool, error) {
		before := mutatedCount(ctx, t, w)
		if err := pods.Delete(ctx, name, metav1.DeleteOptions{GracePeriodSeconds: new(int64)}); err != nil && !apierrors.IsNotFound(err) {
			return false, err
		}
		got, err := pods.Create(ctx, plainPod(ns, name, labels), metav1.CreateOptions{})
		if apierrors.IsAlreadyExists(err) {
			return false, nil
		}
		if err != nil {
			return false, err // failurePolicy Fail: an untrusted certificate ends here
		}
		_, mutated := got.Annotations[api.AnnotationStatus]
		by := mutatedCount(ctx, t, w) > before
		last = fmt.Sprintf("mutated=%v, by %s=%v", mutated, w.Name, by)
		return mutated && by, nil
	}, wait.WithContext(ctx), wait.WithTimeout(ShortWait), wait.WithInterval(250*time.Millisecond))
	if err != nil {
		t.Fatalf("pod %s/%s (labels %v): %v (last: %s)", ns, name, labels, err, last)
	}
}

// expectNotMutated creates a pod that no webhook may mutate.
func expectNotMutated(ctx context.Context, t *testing.T, cs kubernetes.Interface, ns, name string, labels map[string]string) {
	t.Helper()
	got, err := cs.CoreV1().Pods(ns).Create(ctx, plainPod(ns, name, labels), metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if v, ok := got.Annotations[api.AnnotationStatus]; ok {
		t.Fatalf("pod %s/%s (labels %v) was mutated: %s=%q", ns, name, labels, api.AnnotationStatus, v)
	}
}

// mutatedCount reads mlplane_webhook_requests_total{result="mutated"} from
// one webhook instance.
func mutatedCount(ctx context.Context, t *testing.T, w cluster.WebhookInstance) int {
	t.Helper()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, w.MetricsURL, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	sc := bufio.NewScanner(bytes.NewReader(body))
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, `mlplane_webhook_requests_total{result="mutated"} `) {
			v, err := strconv.ParseFloat(strings.Fields(line)[1], 64)
			if err != nil {
				t.Fatal(err)
			}
			return int(v)
		}
	}
	return 0
}

// dialServing connects to addr trusting only caPEM, verifying the name the
// API server would use for the Service, and returns the served leaf.
func dialServing(ctx context.Context, addr string, caPEM []byte, serverName string) (*x509.Certificate, error) {
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, fmt.Errorf("no CA in the bundle")
	}
	d := tls.Dialer{NetDialer: &net.Dialer{Timeout: 2 * time.Second}, Config: &tls.Config{RootCAs: pool, ServerName: serverName}}
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	return conn.(*tls.Conn).ConnectionState().PeerCertificates[0], nil
}

func servedCert(ctx context.Context, t *testing.T, addr string, caPEM []byte, serverName string) *x509.Certificate {
	t.Helper()
	c, err := dialServing(ctx, addr, caPEM, serverName)
	if err != nil {
		t.Fatalf("TLS to %s as %s, trusting the CA: %v", addr, serverName, err)
	}
	return c
}

// waitCABundle waits until every entry of the configuration trusts a CA
// other than previous (nil: any) and the Secret holds that CA, and returns
// it; after a rotation the previous CA must still be trusted too.
func waitCABundle(ctx context.Context, t *testing.T, cs kubernetes.Interface, name string, previous *x509.Certificate) *x509.Certificate {
	t.Helper()
	var ca *x509.Certificate
	var why string
	err := wait.For(func(ctx context.Context) (bool, error) {
		mwc, err := cs.AdmissionregistrationV1().MutatingWebhookConfigurations().Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		sec, err := cs.CoreV1().Secrets(api.DefaultNamespace).Get(ctx, certs.SecretName, metav1.GetOptions{})
		if err != nil {
			why = err.Error()
			return false, nil
		}
		secretCA, err := pki.DecodeX509CertificateBytes(sec.Data[certs.KeyCA])
		if err != nil {
			why = err.Error()
			return false, nil
		}
		if previous != nil && secretCA.Equal(previous) {
			why = "the Secret still holds the previous CA"
			return false, nil
		}
		for _, w := range mwc.Webhooks {
			bundle, err := pki.DecodeX509CertificateSetBytes(w.ClientConfig.CABundle)
			if err != nil || len(bundle) == 0 || !bundle[0].Equal(secretCA) {
				why = fmt.Sprintf("webhook %s: caBundle does not start with the Secret's CA", w.Name)
				return false, nil
			}
			if previous != nil && (len(bundle) < 2 || !bundle[1].Equal(previous)) {
				why = fmt.Sprintf("webhook %s: the previous CA is no longer trusted", w.Name)
				return false, nil
			}
		}
		ca = secretCA
		return true, nil
	}, wait.WithContext(ctx), wait.WithTimeout(LongWait), wait.WithInterval(200*time.Millisecond))
	if err != nil {
		t.Fatalf("caBundle of %s: %v (last: %s)", name, err, why)
	}
	return ca
}

func pemOf(c *x509.Certificate) []byte {
	b, _ := pki.EncodeX509(c)
	return b
}

func deleteSecret(ctx context.Context, t *testing.T, cs kubernetes.Interface, name string) {
	t.Helper()
	err := cs.CoreV1().Secrets(api.DefaultNamespace).Delete(ctx, name, metav1.DeleteOptions{})
	if err != nil && !apierrors.IsNotFound(err) {
		t.Errorf("delete Secret %s: %v", name, err)
	}
}
