package azblob

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"

	"github.com/mlplane/mlplane/internal/modelload"
)

func env(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

func kindOf(err error) modelload.Kind {
	return modelload.Classify(err).Kind
}

func TestParse(t *testing.T) {
	const sas = "sv=2023-11-03&sr=c&sp=rl&sig=c2VjcmV0c2lnbmF0dXJl"
	for _, tc := range []struct {
		uri                                  string
		env                                  map[string]string
		account, container, prefix, endpoint string
		sas, key                             string
	}{
		{uri: "azblob://acct1/models/llama/7b", account: "acct1", container: "models", prefix: "llama/7b", endpoint: "https://acct1.blob.core.windows.net"},
		{uri: "azblob://acct1/models", account: "acct1", container: "models", endpoint: "https://acct1.blob.core.windows.net"},
		{uri: "azblob://acct1/models/dir/", account: "acct1", container: "models", prefix: "dir/", endpoint: "https://acct1.blob.core.windows.net"},
		{uri: "https://acct1.blob.core.windows.net/models/m?" + sas, account: "acct1", container: "models", prefix: "m", endpoint: "https://acct1.blob.core.windows.net", sas: sas},
		{uri: "https://ACCT1.blob.core.windows.net/models/m", account: "acct1", container: "models", prefix: "m", endpoint: "https://ACCT1.blob.core.windows.net"},
		// The URI's SAS wins over the environment's; the key is kept but unused.
		{uri: "azblob://acct1/models/m?" + sas, env: map[string]string{EnvSASToken: "sv=other", EnvAccountKey: "a2V5"},
			account: "acct1", container: "models", prefix: "m", endpoint: "https://acct1.blob.core.windows.net", sas: sas, key: "a2V5"},
		{uri: "azblob://acct1/models/m", env: map[string]string{EnvSASToken: "?" + sas}, account: "acct1", container: "models", prefix: "m", endpoint: "https://acct1.blob.core.windows.net", sas: sas},
		// AZURE_STORAGE_ACCOUNT_KEY before AZURE_STORAGE_ACCESS_KEY.
		{uri: "azblob://acct1/models/m", env: map[string]string{EnvAccessKey: "b2xk", EnvAccountKey: "a2V5"}, account: "acct1", container: "models", prefix: "m", endpoint: "https://acct1.blob.core.windows.net", key: "a2V5"},
		{uri: "azblob://acct1/models/m", env: map[string]string{EnvAccessKey: "b2xk"}, account: "acct1", container: "models", prefix: "m", endpoint: "https://acct1.blob.core.windows.net", key: "b2xk"},
		// Azurite's connection string: endpoint and key.
		{uri: "azblob://devstoreaccount1/models/m", env: map[string]string{EnvConnectionString: "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=a2V5;BlobEndpoint=http://127.0.0.1:10000/devstoreaccount1;"},
			account: "devstoreaccount1", container: "models", prefix: "m", endpoint: "http://127.0.0.1:10000/devstoreaccount1", key: "a2V5"},
		{uri: "azblob://devstoreaccount1/models/m", env: map[string]string{EnvConnectionString: "UseDevelopmentStorage=true"},
			account: "devstoreaccount1", container: "models", prefix: "m", endpoint: devEndpoint, key: devKey},
		// A connection string without BlobEndpoint makes one; its SAS is used.
		{uri: "azblob://acct1/models/m", env: map[string]string{EnvConnectionString: "AccountName=acct1;EndpointSuffix=core.chinacloudapi.cn;SharedAccessSignature=" + sas},
			account: "acct1", container: "models", prefix: "m", endpoint: "https://acct1.blob.core.chinacloudapi.cn", sas: sas},
		// The explicit endpoint wins over the connection string's and the URI's.
		{uri: "https://acct1.blob.core.windows.net/models/m", env: map[string]string{EnvBlobEndpoint: "http://127.0.0.1:9/acct1/", EnvConnectionString: "BlobEndpoint=http://other"},
			account: "acct1", container: "models", prefix: "m", endpoint: "http://127.0.0.1:9/acct1"},
	} {
		t.Run(tc.uri, func(t *testing.T) {
			l, err := parse(tc.uri, env(tc.env))
			if err != nil {
				t.Fatal(err)
			}
			got := []string{l.account, l.container, l.prefix, l.endpoint, l.sas, l.key}
			want := []string{tc.account, tc.container, tc.prefix, tc.endpoint, tc.sas, tc.key}
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Errorf("got account, container, prefix, endpoint, sas, key %q; want %q", got, want)
			}
		})
	}
}

func TestParseErrors(t *testing.T) {
	for _, tc := range []struct {
		uri  string
		env  map[string]string
		want string
	}{
		{uri: "azblob://acct1", want: "container name"},
		{uri: "azblob://acct1/", want: "container name"},
		{uri: "azblob://Acct_1/models", want: "storage account name"},
		{uri: "azblob://acct1/Models/x", want: "container name"},
		{uri: "azblob://acct1/a--b/x", want: "container name"},
		{uri: "azblob://acct1/models//x", want: "empty path element"},
		{uri: "https://acct1.file.core.windows.net/share/x", want: "not an Azure Blob Storage host"},
		{uri: "https://a.b.blob.core.windows.net/models/x", want: "not an Azure Blob Storage host"},
		{uri: "azblob://user:pw@acct1/models/x", want: "user information"},
		{uri: "azblob://acct1/models/x", env: map[string]string{EnvConnectionString: "AccountName=other;AccountKey=a2V5"}, want: `for storage account "other"`},
		{uri: "azblob://acct1/models/x", env: map[string]string{EnvConnectionString: "AccountName=acct1;s3cr3tkeyvalue"}, want: "not Key=Value"},
		{uri: "azblob://acct1/models/x", env: map[string]string{EnvBlobEndpoint: "ftp://host"}, want: "blob endpoint"},
	} {
		t.Run(tc.uri, func(t *testing.T) {
			_, err := parse(tc.uri, env(tc.env))
			if err == nil {
				t.Fatal("no error")
			}
			if k := kindOf(err); k != modelload.KindUsage {
				t.Errorf("kind %v, want KindUsage: %v", k, err)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not say %q", err, tc.want)
			}
			if strings.Contains(err.Error(), "s3cr3t") || strings.Contains(err.Error(), ":pw") {
				t.Errorf("error %q shows a secret", err)
			}
		})
	}
}

// stubIdentity replaces DefaultAzureCredential for one test.
type stubIdentity struct {
	err   error
	calls int
}

func (s *stubIdentity) GetToken(context.Context, policy.TokenRequestOptions) (azcore.AccessToken, error) {
	s.calls++
	if s.err != nil {
		return azcore.AccessToken{}, s.err
	}
	return azcore.AccessToken{Token: "t"}, nil
}

func useIdentity(t *testing.T, id *stubIdentity) {
	old := newIdentity
	newIdentity = func(*azidentity.DefaultAzureCredentialOptions) (azcore.TokenCredential, error) { return id, nil }
	t.Cleanup(func() { newIdentity = old })
}

func TestCredentialOrder(t *testing.T) {
	const sas = "sv=2023-11-03&sp=rl&sig=c2VjcmV0c2lnbmF0dXJl"
	for _, tc := range []struct {
		name     string
		uri      string
		env      map[string]string
		identity error // nil: a token
		want     Auth
		asked    bool // DefaultAzureCredential was asked for a token
	}{
		{name: "sas in uri", uri: "https://acct1.blob.core.windows.net/models/m?" + sas, env: map[string]string{EnvAccountKey: "a2V5"}, want: AuthSAS},
		{name: "sas env before key", uri: "azblob://acct1/models/m", env: map[string]string{EnvSASToken: sas, EnvAccountKey: "a2V5"}, want: AuthSAS},
		{name: "key", uri: "azblob://acct1/models/m", env: map[string]string{EnvAccessKey: "a2V5"}, want: AuthSharedKey},
		{name: "connection string key", uri: "azblob://devstoreaccount1/models/m", env: map[string]string{EnvConnectionString: "UseDevelopmentStorage=true"}, want: AuthSharedKey},
		{name: "anonymous asked for", uri: "azblob://acct1/models/m", env: map[string]string{EnvAnonymous: "true"}, want: AuthAnonymous},
		{name: "identity", uri: "azblob://acct1/models/m", want: AuthIdentity, asked: true},
		{name: "identity unavailable", uri: "azblob://acct1/models/m", identity: azidentity.NewCredentialUnavailableError("no identity"), want: AuthAnonymous, asked: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id := &stubIdentity{err: tc.identity}
			useIdentity(t, id)
			src, err := modelload.NewSource(context.Background(), tc.uri, modelload.SourceOptions{Getenv: env(tc.env)})
			if err != nil {
				t.Fatal(err)
			}
			if got := src.(*Source).Auth(); got != tc.want {
				t.Errorf("auth %q, want %q", got, tc.want)
			}
			if (id.calls > 0) != tc.asked {
				t.Errorf("DefaultAzureCredential asked %d times, want asked=%v", id.calls, tc.asked)
			}
		})
	}
}

func TestIdentityRefused(t *testing.T) {
	useIdentity(t, &stubIdentity{err: &azidentity.AuthenticationFailedError{RawResponse: &http.Response{StatusCode: 401, Status: "401 Unauthorized"}}})
	_, err := modelload.NewSource(context.Background(), "azblob://acct1/models/m", modelload.SourceOptions{Getenv: env(nil)})
	if k := kindOf(err); k != modelload.KindAuth {
		t.Fatalf("kind %v, want KindAuth: %v", k, err)
	}
	var af *azidentity.AuthenticationFailedError
	if !errors.As(err, &af) {
		t.Errorf("error %v does not wrap the AuthenticationFailedError", err)
	}
}

func TestBadKey(t *testing.T) {
	_, err := modelload.NewSource(context.Background(), "azblob://acct1/models/m", modelload.SourceOptions{Getenv: env(map[string]string{EnvAccountKey: "not*base64*secret"})})
	if k := kindOf(err); k != modelload.KindUsage {
		t.Fatalf("kind %v, want KindUsage: %v", k, err)
	}
	if strings.Contains(err.Error(), "secret") {
		t.Errorf("error %q shows the key", err)
	}
}

// failingTransport fails every request the way a dead proxy would, with the
// request's URL (SAS included) in the error.
type failingTransport struct{}

func (failingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	return nil, fmt.Errorf("dial tcp: connection refused while fetching %s", r.URL)
}

func TestMessagesHideSAS(t *testing.T) {
	const sig = "c2VjcmV0c2lnbmF0dXJlMTIzNDU2Nzg"
	uri := "https://acct1.blob.core.windows.net/models/m?sv=2023-11-03&sp=rl&sig=" + sig
	src, err := modelload.NewSource(context.Background(), uri, modelload.SourceOptions{
		Getenv:     env(nil),
		HTTPClient: &http.Client{Transport: failingTransport{}},
	})
	if err != nil {
		t.Fatal(err)
	}
	_, err = src.List(context.Background())
	if err == nil {
		t.Fatal("List succeeded through a failing transport")
	}
	if strings.Contains(err.Error(), sig) || strings.Contains(err.Error(), "sv=2023") {
		t.Errorf("error shows the SAS: %v", err)
	}
	if !strings.Contains(err.Error(), "REDACTED") {
		t.Errorf("error %q: want the URL with its query REDACTED", err)
	}
	_, err = src.Open(context.Background(), modelload.File{Path: "m", Key: "m", Size: 10, Version: `"0x1"`}, 2, 3)
	if err == nil || strings.Contains(err.Error(), sig) {
		t.Errorf("Open error shows the SAS or is nil: %v", err)
	}
}
