package azblob

import (
	"bufio"
	"bytes"
	"context"
	"crypto/md5"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/to"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blockblob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/container"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/sas"

	"github.com/mlplane/mlplane/internal/modelload"
	"github.com/mlplane/mlplane/internal/modelload/modeltest"
)

// Azurite, Microsoft's storage emulator, is started once for the package's
// tests on a loopback port. hack/azurite.sh installs it.
var (
	azuriteOnce     sync.Once
	azuriteEndpoint string // http://127.0.0.1:PORT/devstoreaccount1
	azuriteSkip     string
	azuriteErr      error
	azuriteCmd      *exec.Cmd
	azuriteDir      string
)

func TestMain(m *testing.M) {
	code := m.Run()
	if azuriteCmd != nil && azuriteCmd.Process != nil {
		azuriteCmd.Process.Kill()
		azuriteCmd.Wait()
	}
	if azuriteDir != "" {
		os.RemoveAll(azuriteDir)
	}
	os.Exit(code)
}

func azuriteBinary() string {
	if b := os.Getenv("MLPLANE_AZURITE"); b != "" {
		return b
	}
	b, _ := filepath.Abs("../../../.cache/azurite/node_modules/.bin/azurite-blob")
	return b
}

var listeningRE = regexp.MustCompile(`listens on (http://127\.0\.0\.1:\d+)`)

// azurite returns the endpoint of the package's Azurite, or skips t.
func azurite(t *testing.T) string {
	t.Helper()
	azuriteOnce.Do(func() {
		bin := azuriteBinary()
		if _, err := os.Stat(bin); err != nil {
			azuriteSkip = fmt.Sprintf("Azurite is not installed at %s: run hack/azurite.sh (or set MLPLANE_AZURITE to an azurite-blob binary)", bin)
			return
		}
		dir, err := os.MkdirTemp("", "azurite-")
		if err != nil {
			azuriteErr = err
			return
		}
		azuriteDir = dir
		cmd := exec.Command(bin, "--silent", "--skipApiVersionCheck", "--loose", "--disableTelemetry",
			"--blobHost", "127.0.0.1", "--blobPort", "0", "--location", dir)
		cmd.Env = append(os.Environ(), "AZURITE_DISABLE_TELEMETRY=true")
		// Azurite dies with the test binary, even when it panics or is
		// killed by -timeout.
		cmd.SysProcAttr = dieWithParent()
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.StdoutPipe()
		if err != nil {
			azuriteErr = err
			return
		}
		if err := cmd.Start(); err != nil {
			azuriteErr = fmt.Errorf("starting %s: %w", bin, err)
			return
		}
		azuriteCmd = cmd
		found := make(chan string, 1)
		go func() {
			sc := bufio.NewScanner(out)
			for sc.Scan() {
				if m := listeningRE.FindStringSubmatch(sc.Text()); m != nil {
					found <- m[1]
				}
			}
			close(found)
		}()
		select {
		case u, ok := <-found:
			if !ok {
				azuriteErr = fmt.Errorf("azurite exited before listening: %s", stderr.String())
				return
			}
			azuriteEndpoint = u + "/" + devAccount
		case <-time.After(90 * time.Second):
			azuriteErr = fmt.Errorf("azurite did not listen within 90s: %s", stderr.String())
		}
	})
	if azuriteSkip != "" {
		t.Skip(azuriteSkip)
	}
	if azuriteErr != nil {
		t.Fatal(azuriteErr)
	}
	return azuriteEndpoint
}

// connString is Azurite's connection string (its well-known key).
func connString(endpoint string) string {
	return fmt.Sprintf("DefaultEndpointsProtocol=http;AccountName=%s;AccountKey=%s;BlobEndpoint=%s;", devAccount, devKey, endpoint)
}

var errUnavailable = azidentity.NewCredentialUnavailableError("no identity configured")

var containerSeq struct {
	sync.Mutex
	n int
}

// newContainer creates a fresh container (public-read when public) and
// uploads m under prefix, each blob with its Content-MD5.
func newContainer(t *testing.T, endpoint string, public bool, prefix string, m modeltest.Model) (*container.Client, string) {
	t.Helper()
	containerSeq.Lock()
	containerSeq.n++
	name := fmt.Sprintf("c%d-%d", time.Now().UnixNano()%1e9, containerSeq.n)
	containerSeq.Unlock()
	cred, err := container.NewSharedKeyCredential(devAccount, devKey)
	if err != nil {
		t.Fatal(err)
	}
	c, err := container.NewClientWithSharedKeyCredential(endpoint+"/"+name, cred, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	opts := &container.CreateOptions{}
	if public {
		opts.Access = to.Ptr(container.PublicAccessTypeContainer)
	}
	if _, err := c.Create(ctx, opts); err != nil {
		t.Fatal(err)
	}
	for _, p := range m.Paths() {
		upload(t, c, prefix+p, m[p])
	}
	return c, name
}

func upload(t *testing.T, c *container.Client, name string, b []byte) {
	t.Helper()
	sum := md5.Sum(b)
	_, err := c.NewBlockBlobClient(name).UploadBuffer(context.Background(), b, &blockblob.UploadBufferOptions{
		HTTPHeaders: &blob.HTTPHeaders{BlobContentMD5: sum[:]},
	})
	if err != nil {
		t.Fatalf("upload %s: %v", name, err)
	}
}

func newSource(t *testing.T, uri string, e map[string]string) *Source {
	t.Helper()
	src, err := modelload.NewSource(context.Background(), uri, modelload.SourceOptions{Getenv: env(e)})
	if err != nil {
		t.Fatal(err)
	}
	return src.(*Source)
}

// checkListing checks lst against m, and reads several ranges of every file.
func checkListing(t *testing.T, src modelload.Source, lst *modelload.Listing, m modeltest.Model) {
	t.Helper()
	if len(lst.Files) != len(m) {
		t.Fatalf("listed %d files, want %d: %+v", len(lst.Files), len(m), lst.Files)
	}
	if !strings.HasPrefix(lst.Revision, "sha256:") || len(lst.Revision) != 71 {
		t.Errorf("revision %q, want sha256:HEX", lst.Revision)
	}
	for _, f := range lst.Files {
		want, ok := m[f.Path]
		if !ok {
			t.Errorf("listed %q, not in the model", f.Path)
			continue
		}
		sum := md5.Sum(want)
		if f.Size != int64(len(want)) || f.MD5 != hex.EncodeToString(sum[:]) || f.Version == "" || f.Key == "" {
			t.Errorf("%s: size %d md5 %s version %q key %q; want size %d md5 %x and a version and key", f.Path, f.Size, f.MD5, f.Version, f.Key, len(want), sum)
		}
		size := int64(len(want))
		for _, r := range [][2]int64{{0, -1}, {0, size}, {0, 1}, {size / 2, -1}, {size / 3, size / 3}, {size - 1, 1}, {0, 0}} {
			off, n := r[0], r[1]
			if size == 0 && (off != 0 || n > 0) {
				continue
			}
			rc, err := src.Open(context.Background(), f, off, n)
			if err != nil {
				t.Errorf("%s: Open(%d, %d): %v", f.Path, off, n, err)
				continue
			}
			got, err := io.ReadAll(rc)
			rc.Close()
			end := size
			if n >= 0 {
				end = off + n
			}
			if err != nil || !bytes.Equal(got, want[off:end]) {
				t.Errorf("%s: Open(%d, %d): %d bytes, err %v; want bytes [%d, %d)", f.Path, off, n, len(got), err, off, end)
			}
		}
	}
}

func TestAzuriteListAndOpen(t *testing.T) {
	ep := azurite(t)
	m := modeltest.Small()
	c, name := newContainer(t, ep, false, "models/small/", m)
	// Neighbours that must not be listed: a sibling with the same name
	// prefix, and a directory marker.
	upload(t, c, "models/small-v2/config.json", []byte("{}"))
	upload(t, c, "models/small/", nil)
	e := map[string]string{EnvConnectionString: connString(ep)}
	ctx := context.Background()
	for _, prefix := range []string{"models/small", "models/small/"} {
		src := newSource(t, "azblob://"+devAccount+"/"+name+"/"+prefix, e)
		if src.Auth() != AuthSharedKey {
			t.Fatalf("auth %q, want the connection string's key", src.Auth())
		}
		lst, err := src.List(ctx)
		if err != nil {
			t.Fatal(err)
		}
		checkListing(t, src, lst, m)
	}

	// The whole container, and the revision's response to a change.
	src := newSource(t, "azblob://"+devAccount+"/"+name, e)
	lst, err := src.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(lst.Files) != len(m)+1 {
		t.Errorf("the container lists %d files, want %d", len(lst.Files), len(m)+1)
	}
	again, err := src.List(ctx)
	if err != nil || again.Revision != lst.Revision {
		t.Errorf("second listing: revision %q, err %v; want %q", again.Revision, err, lst.Revision)
	}
	upload(t, c, "models/small/config.json", []byte(`{"changed":true}`))
	changed, err := src.List(ctx)
	if err != nil || changed.Revision == lst.Revision {
		t.Errorf("after a rewrite: revision %q, err %v; want a new one", changed.Revision, err)
	}
}

func TestAzuriteSingleBlob(t *testing.T) {
	ep := azurite(t)
	m := modeltest.New(2, map[string]int{"model.gguf": 100_003})
	_, name := newContainer(t, ep, false, "gguf/", m)
	src := newSource(t, "azblob://"+devAccount+"/"+name+"/gguf/model.gguf", map[string]string{EnvConnectionString: connString(ep)})
	lst, err := src.List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	checkListing(t, src, lst, m)
	if lst.Files[0].Key != "gguf/model.gguf" {
		t.Errorf("key %q, want the blob's name", lst.Files[0].Key)
	}
}

func TestAzuriteSAS(t *testing.T) {
	ep := azurite(t)
	m := modeltest.Small()
	_, name := newContainer(t, ep, false, "small/", m)
	cred, err := container.NewSharedKeyCredential(devAccount, devKey)
	if err != nil {
		t.Fatal(err)
	}
	qp, err := sas.BlobSignatureValues{
		Protocol:      sas.ProtocolHTTPSandHTTP,
		ExpiryTime:    time.Now().Add(time.Hour).UTC(),
		Permissions:   (&sas.ContainerPermissions{Read: true, List: true}).String(),
		ContainerName: name,
	}.SignWithSharedKey(cred)
	if err != nil {
		t.Fatal(err)
	}
	token := qp.Encode()
	ctx := context.Background()

	// KServe's form, the SAS in the URI (routed by modelload.NewSource);
	// the endpoint override points it at Azurite.
	uri := "https://" + devAccount + ".blob.core.windows.net/" + name + "/small?" + token
	src := newSource(t, uri, map[string]string{EnvBlobEndpoint: ep})
	if src.Auth() != AuthSAS {
		t.Fatalf("auth %q, want SAS", src.Auth())
	}
	lst, err := src.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	checkListing(t, src, lst, m)

	// The SAS in the environment, ahead of a wrong key.
	src = newSource(t, "azblob://"+devAccount+"/"+name+"/small", map[string]string{
		EnvBlobEndpoint: ep, EnvSASToken: token, EnvAccountKey: "d3Jvbmcga2V5",
	})
	lst, err = src.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	checkListing(t, src, lst, m)

	// A SAS without the List permission is refused, and the message does
	// not show it.
	qp, err = sas.BlobSignatureValues{
		Protocol: sas.ProtocolHTTPSandHTTP, ExpiryTime: time.Now().Add(time.Hour).UTC(),
		Permissions: (&sas.ContainerPermissions{Read: true}).String(), ContainerName: name,
	}.SignWithSharedKey(cred)
	if err != nil {
		t.Fatal(err)
	}
	src = newSource(t, "azblob://"+devAccount+"/"+name+"/small", map[string]string{EnvBlobEndpoint: ep, EnvSASToken: qp.Encode()})
	_, err = src.List(ctx)
	if k := kindOf(err); k != modelload.KindAuth {
		t.Fatalf("List with a read-only SAS: kind %v, want KindAuth: %v", k, err)
	}
	if strings.Contains(err.Error(), qp.Signature()) {
		t.Errorf("error shows the SAS signature: %v", err)
	}
}

func TestAzuriteWrongKey(t *testing.T) {
	ep := azurite(t)
	_, name := newContainer(t, ep, false, "small/", modeltest.Small())
	const wrong = "d3Jvbmcga2V5IHdyb25nIGtleSB3cm9uZyBrZXk="
	src := newSource(t, "azblob://"+devAccount+"/"+name+"/small", map[string]string{EnvBlobEndpoint: ep, EnvAccountKey: wrong})
	_, err := src.List(context.Background())
	if k := kindOf(err); k != modelload.KindAuth {
		t.Fatalf("kind %v, want KindAuth: %v", k, err)
	}
	if modelload.Classify(err).Retry {
		t.Errorf("a refused key is retryable: %v", err)
	}
	if strings.Contains(err.Error(), wrong) {
		t.Errorf("error shows the key: %v", err)
	}
	// Opening with the wrong key is refused too.
	_, err = src.Open(context.Background(), modelload.File{Path: "config.json", Key: "small/config.json", Size: 517}, 0, 10)
	if k := kindOf(err); k != modelload.KindAuth {
		t.Errorf("Open: kind %v, want KindAuth: %v", k, err)
	}
}

func TestAzuriteNotFound(t *testing.T) {
	ep := azurite(t)
	_, name := newContainer(t, ep, false, "small/", modeltest.Small())
	e := map[string]string{EnvConnectionString: connString(ep)}
	for _, uri := range []string{
		"azblob://" + devAccount + "/no-such-container/small",
		"azblob://" + devAccount + "/" + name + "/no-such-prefix",
		"azblob://" + devAccount + "/" + name + "/small/config.json/",
		"azblob://" + devAccount + "/" + name + "/smal",
	} {
		_, err := newSource(t, uri, e).List(context.Background())
		if k := kindOf(err); k != modelload.KindNotFound {
			t.Errorf("%s: kind %v, want KindNotFound: %v", uri, k, err)
		}
	}
	src := newSource(t, "azblob://"+devAccount+"/"+name+"/small", e)
	_, err := src.Open(context.Background(), modelload.File{Path: "gone", Key: "small/gone", Size: 5}, 0, 5)
	if k := kindOf(err); k != modelload.KindNotFound {
		t.Errorf("Open of a missing blob: kind %v, want KindNotFound: %v", k, err)
	}
}

func TestAzuriteChangedBlob(t *testing.T) {
	ep := azurite(t)
	m := modeltest.Small()
	c, name := newContainer(t, ep, false, "", m)
	src := newSource(t, "azblob://"+devAccount+"/"+name, map[string]string{EnvConnectionString: connString(ep)})
	lst, err := src.List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var f modelload.File
	for _, f = range lst.Files {
		if f.Path == "tokenizer.json" {
			break
		}
	}
	upload(t, c, f.Key, bytes.Repeat([]byte("x"), int(f.Size)))
	_, err = src.Open(context.Background(), f, 10, 100)
	if k := kindOf(err); k != modelload.KindIntegrity {
		t.Fatalf("Open of a rewritten blob: kind %v, want KindIntegrity: %v", k, err)
	}
}

func TestAzuriteAnonymous(t *testing.T) {
	ep := azurite(t)
	m := modeltest.Small()
	_, public := newContainer(t, ep, true, "small/", m)
	_, private := newContainer(t, ep, false, "small/", m)
	ctx := context.Background()
	for _, e := range []map[string]string{
		{EnvBlobEndpoint: ep, EnvAnonymous: "true"},
		{EnvBlobEndpoint: ep}, // DefaultAzureCredential unavailable (stubbed)
	} {
		id := &stubIdentity{err: fmt.Errorf("wrapped: %w", errUnavailable)}
		useIdentity(t, id)
		src := newSource(t, "azblob://"+devAccount+"/"+public+"/small", e)
		if src.Auth() != AuthAnonymous {
			t.Fatalf("auth %q, want anonymous", src.Auth())
		}
		lst, err := src.List(ctx)
		if err != nil {
			t.Fatal(err)
		}
		checkListing(t, src, lst, m)

		_, err = newSource(t, "azblob://"+devAccount+"/"+private+"/small", e).List(ctx)
		if k := kindOf(err); k != modelload.KindAuth && k != modelload.KindNotFound {
			t.Errorf("anonymous listing of a private container: kind %v, want KindAuth or KindNotFound: %v", k, err)
		}
		if err == nil || !strings.Contains(err.Error(), "anonymous access") {
			t.Errorf("error %v does not say the access was anonymous", err)
		}
	}
}

func TestAzuriteFetch(t *testing.T) {
	ep := azurite(t)
	m := modeltest.Small()
	_, name := newContainer(t, ep, false, "llm/", m)
	uri := "azblob://" + devAccount + "/" + name + "/llm"
	src := newSource(t, uri, map[string]string{EnvConnectionString: connString(ep)})
	dest := t.TempDir()
	// Small chunks: the 2 MiB shard is fetched as several parallel ranges.
	res, err := modelload.Fetch(context.Background(), src, modelload.Options{URI: uri, Dest: dest, ChunkSize: 256 << 10, Concurrency: 8})
	if err != nil {
		t.Fatal(err)
	}
	modeltest.CheckDir(t, dest, m)
	if res.Fetched != m.Size() {
		t.Errorf("fetched %d bytes, want %d", res.Fetched, m.Size())
	}
	if !strings.HasPrefix(res.Manifest.Revision, "sha256:") {
		t.Errorf("manifest revision %q", res.Manifest.Revision)
	}
}
