// Package azblob is the model source of Azure Blob Storage:
//
//	azblob://ACCOUNT/CONTAINER/PREFIX
//	https://ACCOUNT.blob.core.windows.net/CONTAINER/PREFIX[?SAS]   (KServe's form)
//
// PREFIX names a "directory" (every blob under PREFIX/, listed flat, paths
// relative to it) or, when no blob is under PREFIX/, the single blob PREFIX
// (its path is its base name). An empty PREFIX is the whole container. Blob
// names ending in "/" and ADLS Gen2 directory blobs (metadata
// hdi_isfolder=true) are skipped; zero-length blobs are files.
//
// # Endpoint
//
// The first of: AZURE_STORAGE_BLOB_ENDPOINT (for example Azurite's
// http://127.0.0.1:10000/devstoreaccount1, or a sovereign cloud's
// https://ACCOUNT.blob.core.chinacloudapi.cn); the BlobEndpoint of
// AZURE_STORAGE_CONNECTION_STRING, or the endpoint its
// DefaultEndpointsProtocol, AccountName and EndpointSuffix make
// (UseDevelopmentStorage=true is Azurite's default endpoint and account);
// the https URI's own host; https://ACCOUNT.blob.core.windows.net.
//
// # Credentials
//
// The first that is configured is used, and no other is tried:
//
//  1. a SAS token: the URI's query (https://…/PREFIX?sv=…&sig=…), then
//     AZURE_STORAGE_SAS_TOKEN, then the connection string's
//     SharedAccessSignature. It needs the List and Read permissions.
//  2. the account key (Shared Key): AZURE_STORAGE_ACCOUNT_KEY, then
//     AZURE_STORAGE_ACCESS_KEY (KServe's and the Azure CLI's name), then the
//     connection string's AccountKey.
//  3. AZURE_STORAGE_ANONYMOUS=true: anonymous access, nothing else tried.
//  4. azidentity.DefaultAzureCredential: a service principal
//     (AZURE_TENANT_ID, AZURE_CLIENT_ID and AZURE_CLIENT_SECRET or
//     AZURE_CLIENT_CERTIFICATE_PATH), AKS workload identity
//     (AZURE_FEDERATED_TOKEN_FILE, AZURE_CLIENT_ID, AZURE_TENANT_ID, which
//     the workload identity webhook sets), a managed identity (IMDS), the
//     Azure CLI. The role needs "Storage Blob Data Reader". It is asked for a
//     token once, when the source is made: if every one of those is
//     unavailable (nothing configured, no IMDS), the source falls back to
//     anonymous access, for public containers; if one is configured but
//     refused, that is a KindAuth error. It reads the environment itself
//     (os.Getenv, not SourceOptions.Getenv).
//  5. anonymous access.
//
// KServe's storage initializer differs: it uses DefaultAzureCredential only
// when AZURE_CLIENT_ID (or its legacy AZ_CLIENT_ID) is set, and then ahead
// of AZURE_STORAGE_ACCESS_KEY; with neither, anonymous access; a SAS only
// from the URI. Here explicit secrets win over ambient identity, a managed
// identity without AZURE_CLIENT_ID (a system-assigned one) works too, and a
// SAS may come from the environment (the webhook refuses one in an
// azblob:// URI). The legacy AZ_TENANT_ID, AZ_CLIENT_ID and AZ_CLIENT_SECRET
// names are not read.
//
// Keys and SAS tokens never appear in messages: URIs go through
// modelload.RedactURI and every error message is scrubbed of URL queries,
// the SAS token and the key.
//
// Import this package for its side effect (modelload.NewSource accepts the
// scheme): import _ "github.com/mlplane/mlplane/internal/modelload/azblob".
package azblob

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"strings"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/container"

	"github.com/mlplane/mlplane/internal/modelload"
)

// Scheme is the URI scheme of this source.
const Scheme = "azblob"

func init() {
	modelload.Register(Scheme, New)
}

// The environment variables this source reads.
const (
	EnvBlobEndpoint     = "AZURE_STORAGE_BLOB_ENDPOINT"
	EnvConnectionString = "AZURE_STORAGE_CONNECTION_STRING"
	EnvSASToken         = "AZURE_STORAGE_SAS_TOKEN"
	EnvAccountKey       = "AZURE_STORAGE_ACCOUNT_KEY"
	EnvAccessKey        = "AZURE_STORAGE_ACCESS_KEY"
	EnvAnonymous        = "AZURE_STORAGE_ANONYMOUS"
)

// Azurite's well-known development account (UseDevelopmentStorage=true).
const (
	devAccount  = "devstoreaccount1"
	devKey      = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
	devEndpoint = "http://127.0.0.1:10000/devstoreaccount1"
)

// Auth says which credential a source uses.
type Auth string

// The credentials, in the order they are looked for.
const (
	AuthSAS       Auth = "SAS token"
	AuthSharedKey Auth = "account key"
	AuthIdentity  Auth = "Azure identity"
	AuthAnonymous Auth = "anonymous"
)

// newIdentity makes the DefaultAzureCredential; tests replace it (the real
// one reaches for IMDS on the network).
var newIdentity = func(o *azidentity.DefaultAzureCredentialOptions) (azcore.TokenCredential, error) {
	return azidentity.NewDefaultAzureCredential(o)
}

// storageScope is the OAuth scope of Azure Storage.
const storageScope = "https://storage.azure.com/.default"

// location is what a URI and the environment say about where the model is.
type location struct {
	account, container, prefix string
	endpoint                   string // scheme://host[/path], no trailing slash
	sas                        string // without "?"
	key                        string
	anonymous                  bool // AZURE_STORAGE_ANONYMOUS=true
	display                    string
}

var (
	accountRE   = regexp.MustCompile(`^[a-z0-9]{3,24}$`)
	containerRE = regexp.MustCompile(`^(\$root|\$web|\$logs|[a-z0-9](?:[a-z0-9]|-[a-z0-9]){2,62})$`)
)

// parse reads uri and the environment. Errors are KindUsage.
func parse(uri string, getenv func(string) string) (*location, error) {
	bad := func(format string, args ...any) error {
		return modelload.Errorf(modelload.KindUsage, "model URI %q: "+format+"; want azblob://ACCOUNT/CONTAINER/PREFIX or https://ACCOUNT.blob.core.windows.net/CONTAINER/PREFIX", append([]any{modelload.RedactURI(uri)}, args...)...)
	}
	u, err := url.Parse(uri)
	if err != nil {
		return nil, bad("not a URL")
	}
	l := &location{sas: u.RawQuery}
	if u.User != nil || u.Fragment != "" {
		return nil, bad("user information and fragments are not allowed")
	}
	rest := strings.TrimPrefix(u.Path, "/")
	switch u.Scheme {
	case Scheme:
		l.account = u.Host
		l.display = Scheme + "://" + u.Host + "/" + rest
	case "https":
		host := strings.ToLower(u.Hostname())
		acct, ok := strings.CutSuffix(host, ".blob.core.windows.net")
		if !ok || strings.Contains(acct, ".") {
			return nil, bad("not an Azure Blob Storage host")
		}
		l.account = acct
		l.endpoint = "https://" + u.Host
		l.display = "https://" + u.Host + "/" + rest
	default:
		return nil, bad("scheme %q", u.Scheme)
	}
	if !accountRE.MatchString(l.account) {
		return nil, bad("storage account name %q is not 3-24 lower-case letters and digits", l.account)
	}
	l.container, l.prefix, _ = strings.Cut(rest, "/")
	if !containerRE.MatchString(l.container) {
		return nil, bad("container name %q is not 3-63 lower-case letters, digits and single hyphens", l.container)
	}
	if strings.HasPrefix(l.prefix, "/") || strings.Contains(l.prefix, "//") {
		return nil, bad("empty path element in the prefix")
	}

	cs := map[string]string{}
	if s := getenv(EnvConnectionString); s != "" {
		if cs, err = parseConnectionString(s); err != nil {
			return nil, err
		}
		if a := cs["accountname"]; a != "" && a != l.account {
			return nil, modelload.Errorf(modelload.KindUsage, "%s is for storage account %q, the model URI %q names %q", EnvConnectionString, a, modelload.RedactURI(uri), l.account)
		}
	}
	switch {
	case getenv(EnvBlobEndpoint) != "":
		l.endpoint = getenv(EnvBlobEndpoint)
	case cs["blobendpoint"] != "":
		l.endpoint = cs["blobendpoint"]
	case cs["accountname"] != "" && l.endpoint == "":
		proto, suffix := cs["defaultendpointsprotocol"], cs["endpointsuffix"]
		if proto == "" {
			proto = "https"
		}
		if suffix == "" {
			suffix = "core.windows.net"
		}
		l.endpoint = proto + "://" + l.account + ".blob." + suffix
	case l.endpoint == "":
		l.endpoint = "https://" + l.account + ".blob.core.windows.net"
	}
	l.endpoint = strings.TrimRight(l.endpoint, "/")
	if e, err := url.Parse(l.endpoint); err != nil || (e.Scheme != "http" && e.Scheme != "https") || e.Host == "" || e.RawQuery != "" {
		return nil, modelload.Errorf(modelload.KindUsage, "blob endpoint %q: want http(s)://HOST[/PATH]", modelload.RedactURI(l.endpoint))
	}

	for _, s := range []string{l.sas, getenv(EnvSASToken), cs["sharedaccesssignature"]} {
		if s = strings.TrimPrefix(s, "?"); s != "" {
			l.sas = s
			break
		}
	}
	for _, k := range []string{getenv(EnvAccountKey), getenv(EnvAccessKey), cs["accountkey"]} {
		if k != "" {
			l.key = k
			break
		}
	}
	l.anonymous = strings.EqualFold(getenv(EnvAnonymous), "true")
	return l, nil
}

// parseConnectionString reads "Key=Value;..." (keys lower-cased).
func parseConnectionString(s string) (map[string]string, error) {
	m := map[string]string{}
	for _, part := range strings.Split(s, ";") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		k, v, ok := strings.Cut(part, "=")
		if !ok || k == "" {
			// Never echo the part: it may be a key.
			return nil, modelload.Errorf(modelload.KindUsage, "%s: an element is not Key=Value", EnvConnectionString)
		}
		m[strings.ToLower(strings.TrimSpace(k))] = strings.TrimSpace(v)
	}
	if strings.EqualFold(m["usedevelopmentstorage"], "true") {
		def := map[string]string{"accountname": devAccount, "accountkey": devKey, "blobendpoint": devEndpoint}
		for k, v := range def {
			if m[k] == "" {
				m[k] = v
			}
		}
	}
	return m, nil
}

// Source is an Azure Blob Storage model. Safe for concurrent use.
type Source struct {
	loc      *location
	auth     Auth
	client   *container.Client
	identity azcore.TokenCredential
	// identityNote says why an anonymous source is anonymous, for messages.
	identityNote string
}

// New makes the Source of uri (the modelload.Factory of "azblob"). It
// chooses the credential as the package documentation says; with none
// configured explicitly it asks DefaultAzureCredential for a token (over the
// network, bounded by ctx). Errors: KindUsage for a malformed URI, endpoint,
// connection string or account key; KindAuth when an Azure identity is
// configured but refused.
func New(ctx context.Context, uri string, o modelload.SourceOptions) (modelload.Source, error) {
	o.Defaults()
	l, err := parse(uri, o.Getenv)
	if err != nil {
		return nil, err
	}
	s := &Source{loc: l}
	containerURL := l.endpoint + "/" + l.container
	// No SDK retries: the engine retries List and Open with its own backoff
	// (and Retry-After), and retries at both levels would multiply.
	copts := &container.ClientOptions{ClientOptions: azcore.ClientOptions{
		Transport: o.HTTPClient,
		Retry:     policy.RetryOptions{MaxRetries: -1},
		Telemetry: policy.TelemetryOptions{ApplicationID: "mlplane-model-loader"},
	}}
	switch {
	case l.sas != "":
		s.auth = AuthSAS
	case l.key != "":
		s.auth = AuthSharedKey
	case l.anonymous:
		s.auth = AuthAnonymous
		s.identityNote = EnvAnonymous + "=true"
	default:
		cred, err := newIdentity(&azidentity.DefaultAzureCredentialOptions{
			ClientOptions: azcore.ClientOptions{Transport: o.HTTPClient},
		})
		if err == nil {
			_, err = cred.GetToken(ctx, policy.TokenRequestOptions{Scopes: []string{storageScope}})
		}
		var refused *azidentity.AuthenticationFailedError
		switch {
		case err == nil:
			s.auth, s.identity = AuthIdentity, cred
		case errors.As(err, &refused):
			return nil, &modelload.Error{Kind: modelload.KindAuth, Err: s.scrub(fmt.Errorf("%s: Azure identity (DefaultAzureCredential) was refused: %w", l.display, err))}
		case ctx.Err() != nil:
			return nil, modelload.Classify(ctx.Err())
		default:
			s.auth = AuthAnonymous
			s.identityNote = "no SAS token, account key or Azure identity is configured"
		}
	}
	switch s.auth {
	case AuthSAS:
		s.client, err = container.NewClientWithNoCredential(containerURL+"?"+l.sas, copts)
	case AuthSharedKey:
		var cred *container.SharedKeyCredential
		if cred, err = container.NewSharedKeyCredential(l.account, l.key); err != nil {
			return nil, modelload.Errorf(modelload.KindUsage, "the storage account key (%s, %s or the connection string's AccountKey) is not valid base64", EnvAccountKey, EnvAccessKey)
		}
		s.client, err = container.NewClientWithSharedKeyCredential(containerURL, cred, copts)
	case AuthIdentity:
		s.client, err = container.NewClient(containerURL, s.identity, copts)
	default:
		s.client, err = container.NewClientWithNoCredential(containerURL, copts)
	}
	if err != nil {
		return nil, s.fail(err, "client for "+l.display)
	}
	return s, nil
}

// Auth says which credential the source uses.
func (s *Source) Auth() Auth { return s.auth }

// String is the model's location, without credentials.
func (s *Source) String() string { return s.loc.display }
