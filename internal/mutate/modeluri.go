package mutate

import (
	"errors"
	"fmt"
	"net/url"
	"path"
	"slices"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/mlplane/mlplane/internal/api"
)

// modelSource is a parsed api.AnnotationModelURI.
type modelSource struct {
	uri    string
	scheme string
	rest   string
	// claim and subPath are set for pvc://CLAIM/PATH.
	claim   string
	subPath string
	// image is the image reference of oci://REFERENCE.
	image string
}

// acceptedURIs lists every form of api.AnnotationModelURI, for messages.
const acceptedURIs = "want s3://BUCKET/PREFIX, gs://BUCKET/PREFIX, hf://ORG/MODEL[@REVISION], https://HOST/PATH, " +
	"azblob://ACCOUNT/CONTAINER[/PREFIX], oci://REGISTRY/REPOSITORY:TAG (or @sha256:DIGEST) or pvc://CLAIM/PATH"

// The form of each scheme, for the messages about a URI of that scheme.
const (
	formS3     = "want s3://BUCKET/PREFIX"
	formGS     = "want gs://BUCKET/PREFIX"
	formHF     = "want hf://ORG/MODEL[@REVISION] or hf://MODEL[@REVISION]"
	formHTTPS  = "want https://HOST/PATH"
	formAzure  = "want azblob://ACCOUNT/CONTAINER[/PREFIX] or https://ACCOUNT.blob.core.windows.net/CONTAINER[/PREFIX]"
	formOCI    = "want oci://REGISTRY/REPOSITORY:TAG or oci://REGISTRY/REPOSITORY@sha256:DIGEST"
	formPVC    = "want pvc://CLAIM/PATH"
	azureHost  = ".blob.core.windows.net"
	maxRepoID  = 96
	redactedPW = "xxxxx"
)

// The rules the messages state, each next to the check that applies it.
const (
	ruleS3Bucket    = "3 to 63 lowercase letters, digits, '.' and '-', starting and ending with a letter or digit"
	ruleGSBucket    = "3 to 63 lowercase letters, digits, '-', '_' and '.' (up to 222 with dots, at most 63 between two dots), starting and ending with a letter or digit"
	ruleRepoID      = "letters, digits, '-', '_' and '.', each part starting and ending with a letter, digit or '_', no \"--\" or \"..\", at most 96 characters"
	ruleAccount     = "3 to 24 lowercase letters and digits"
	ruleContainer   = "3 to 63 lowercase letters, digits and single hyphens, starting and ending with a letter or digit"
	credentialsHint = "credentials in a URI are visible to anyone who can read the pod; put them in a Secret named by " + api.AnnotationModelSecret
)

// parseModelURI checks what can be judged of a model URI at admission: the
// scheme and the shape of each scheme's URI. Whether the bucket, repository
// or image exists is the loader's (or the kubelet's) to find out. A URI that
// is legal but leaks a credential into the pod spec adds a warning.
func parseModelURI(v string, warnings *[]string) (modelSource, error) {
	shown := v
	bad := func(why, want string) error {
		return fmt.Errorf("annotation %s: invalid value %q: %s; %s", api.AnnotationModelURI, shown, why, want)
	}
	scheme, rest, ok := strings.Cut(v, "://")
	if !ok {
		return modelSource{}, bad("no scheme", acceptedURIs)
	}
	if strings.ContainsAny(v, " \t\r\n") {
		return modelSource{}, bad("it contains white space", acceptedURIs)
	}
	src := modelSource{uri: v, scheme: scheme, rest: rest}
	switch scheme {
	case "s3":
		bucket, _, _ := strings.Cut(rest, "/")
		if bucket == "" {
			return modelSource{}, bad("no bucket", formS3)
		}
		if !validS3Bucket(bucket) {
			return modelSource{}, bad(fmt.Sprintf("bucket %q is not a valid S3 bucket name (%s)", bucket, ruleS3Bucket), formS3)
		}
	case "gs":
		bucket, _, _ := strings.Cut(rest, "/")
		if bucket == "" {
			return modelSource{}, bad("no bucket", formGS)
		}
		if !validGSBucket(bucket) {
			return modelSource{}, bad(fmt.Sprintf("bucket %q is not a valid Cloud Storage bucket name (%s)", bucket, ruleGSBucket), formGS)
		}
	case "hf":
		repo, rev, hasRev := strings.Cut(rest, "@")
		switch {
		case repo == "":
			return modelSource{}, bad("no repository", formHF)
		case strings.Count(repo, "/") > 1:
			return modelSource{}, bad(fmt.Sprintf("repository id %q has more than one \"/\" (choose files inside a repository with %s)", repo, api.AnnotationModelAllowPatterns), formHF)
		case !validRepoID(repo):
			return modelSource{}, bad(fmt.Sprintf("repository id %q is not a valid Hugging Face repository id (%s)", repo, ruleRepoID), formHF)
		case hasRev && rev == "":
			return modelSource{}, bad("the revision after \"@\" is empty", formHF)
		}
	case "http":
		return modelSource{}, bad("http:// is refused: https is required", formHTTPS)
	case "https":
		u, err := url.Parse(v)
		if err != nil {
			var uerr *url.Error
			if errors.As(err, &uerr) {
				err = uerr.Err
			}
			return modelSource{}, bad(fmt.Sprintf("not a valid URL: %v", err), formHTTPS)
		}
		if u.User != nil {
			shown = redactUserinfo(u)
			return modelSource{}, bad("it contains a user name or password: "+credentialsHint, formHTTPS)
		}
		host := u.Hostname()
		if host == "" {
			return modelSource{}, bad("no host", formHTTPS)
		}
		if account, ok := strings.CutSuffix(strings.ToLower(host), azureHost); ok {
			container, _, _ := strings.Cut(strings.TrimPrefix(u.Path, "/"), "/")
			if err := checkAzure(account, container, bad); err != nil {
				return modelSource{}, err
			}
		} else if strings.Trim(u.Path, "/") == "" {
			return modelSource{}, bad("no path", formHTTPS)
		}
		if u.RawQuery != "" {
			*warnings = append(*warnings, fmt.Sprintf("annotation %s: the URI has a query (a presigned URL or a SAS token?); it is in the pod spec and in the serving container's %s, readable by anyone who can read the pod, until it expires. Prefer a Secret named by %s",
				api.AnnotationModelURI, api.EnvModelURI, api.AnnotationModelSecret))
		}
	case "azblob":
		authority, p, _ := strings.Cut(rest, "/")
		if i := strings.LastIndexByte(authority, '@'); i >= 0 {
			shown = scheme + "://" + redactedPW + rest[i:]
			return modelSource{}, bad("it contains a user name or key: "+credentialsHint, formAzure)
		}
		if i := strings.IndexAny(v, "?#"); i >= 0 {
			shown = v[:i+1] + "..." // a SAS token stays out of the message and the webhook's log
			return modelSource{}, bad("an azblob:// URI has no query or fragment (a SAS token belongs in the Secret named by "+api.AnnotationModelSecret+")", formAzure)
		}
		container, _, _ := strings.Cut(p, "/")
		if err := checkAzure(authority, container, bad); err != nil {
			return modelSource{}, err
		}
	case "oci":
		authority, _, _ := strings.Cut(rest, "/")
		if i := strings.LastIndexByte(authority, '@'); i >= 0 {
			shown = scheme + "://" + redactedPW + rest[i:]
			return modelSource{}, bad("it contains a user name or password: the kubelet pulls with the pod's imagePullSecrets, and a loader with the Secret named by "+api.AnnotationModelSecret, formOCI)
		}
		if why := checkImageReference(rest); why != "" {
			return modelSource{}, bad(why, formOCI)
		}
		src.image = rest
	case "pvc":
		claim, p, _ := strings.Cut(rest, "/")
		if msgs := validation.IsDNS1123Subdomain(claim); len(msgs) > 0 {
			return modelSource{}, bad(fmt.Sprintf("claim name %q is not a valid PersistentVolumeClaim name", claim), formPVC)
		}
		if slices.Contains(strings.Split(p, "/"), "..") {
			return modelSource{}, bad("the path may not contain ..", formPVC)
		}
		src.claim = claim
		if p = strings.Trim(path.Clean("/"+p), "/"); p != "" {
			src.subPath = p
		}
	default:
		return modelSource{}, bad(fmt.Sprintf("unsupported scheme %q", scheme), acceptedURIs)
	}
	return src, nil
}

// validS3Bucket applies the S3 bucket naming rules (ruleS3Bucket).
func validS3Bucket(b string) bool {
	return len(b) >= 3 && len(b) <= 63 && alnum(b[0]) && alnum(b[len(b)-1]) &&
		onlyBytes(b, func(c byte) bool { return lowerOrDigit(c) || c == '.' || c == '-' })
}

// validGSBucket applies the Cloud Storage bucket naming rules (ruleGSBucket).
func validGSBucket(b string) bool {
	if len(b) < 3 || len(b) > 222 || len(b) > 63 && !strings.Contains(b, ".") || !alnum(b[0]) || !alnum(b[len(b)-1]) {
		return false
	}
	for rest := b; rest != ""; {
		var part string
		part, rest, _ = strings.Cut(rest, ".")
		if len(part) > 63 {
			return false
		}
	}
	return onlyBytes(b, func(c byte) bool { return lowerOrDigit(c) || c == '.' || c == '-' || c == '_' })
}

// validRepoID applies huggingface_hub's validate_repo_id: the regular
// expression ^(\b[\w\-.]+\b/)?\b[\w\-.]+\b$ (ASCII), no "--" or "..", at
// most 96 characters.
func validRepoID(id string) bool {
	if len(id) > maxRepoID || strings.Contains(id, "--") || strings.Contains(id, "..") {
		return false
	}
	org, name, hasOrg := strings.Cut(id, "/")
	part := func(p string) bool {
		return p != "" && word(p[0]) && word(p[len(p)-1]) && onlyBytes(p, func(c byte) bool { return word(c) || c == '-' || c == '.' })
	}
	return part(org) && (!hasOrg || part(name))
}

// checkAzure applies the Azure Blob Storage account and container naming
// rules.
func checkAzure(account, container string, bad func(why, want string) error) error {
	switch {
	case account == "":
		return bad("no storage account", formAzure)
	case len(account) < 3 || len(account) > 24 || !onlyBytes(account, lowerOrDigit):
		return bad(fmt.Sprintf("storage account %q is not a valid Azure storage account name (%s)", account, ruleAccount), formAzure)
	case container == "":
		return bad("no container", formAzure)
	case len(container) < 3 || len(container) > 63 || !alnum(container[0]) || !alnum(container[len(container)-1]) ||
		strings.Contains(container, "--") || !onlyBytes(container, func(c byte) bool { return lowerOrDigit(c) || c == '-' }):
		return bad(fmt.Sprintf("container %q is not a valid Azure container name (%s)", container, ruleContainer), formAzure)
	}
	return nil
}

// checkImageReference says what is wrong with an oci:// reference, or "".
// The reference is parsed by go-containerregistry with strict validation
// (no default registry, repository namespace or tag); the checks before it
// only make its two most common refusals say what to write instead.
func checkImageReference(ref string) string {
	if _, err := name.ParseReference(ref, name.StrictValidation); err == nil {
		return ""
	}
	registry, repo, hasRepo := strings.Cut(ref, "/")
	switch {
	case ref == "":
		return "no image reference"
	case registry == "":
		return "no registry"
	case !hasRepo || repo == "":
		return fmt.Sprintf("%q is not REGISTRY/REPOSITORY: the reference must name the registry host and the repository, as in ghcr.io/ORG/MODEL:TAG", ref)
	case registry != "localhost" && !strings.ContainsAny(registry, ".:"):
		return fmt.Sprintf("%q is not a registry host: the reference must start with its registry, as in ghcr.io/ORG/MODEL:TAG or docker.io/library/NAME:TAG", registry)
	}
	last := repo[strings.LastIndexByte(repo, '/')+1:]
	if !strings.ContainsAny(last, ":@") {
		return "no tag or digest: name the version to mount, as in :v1 or @sha256:DIGEST"
	}
	var err error
	if strings.Contains(ref, "@") {
		_, err = name.NewDigest(ref, name.StrictValidation)
	} else {
		_, err = name.NewTag(ref, name.StrictValidation)
	}
	if err == nil { // not expected: ParseReference tries both
		return "not a valid image reference"
	}
	return "not a valid image reference: " + err.Error()
}

// redactUserinfo is u as a message may show it: the password, or the user
// name when it stands alone (it may be a token), replaced.
func redactUserinfo(u *url.URL) string {
	c := *u
	if _, has := u.User.Password(); has {
		c.User = url.UserPassword(u.User.Username(), redactedPW)
	} else {
		c.User = url.User(redactedPW)
	}
	return c.String()
}

func onlyBytes(s string, ok func(byte) bool) bool {
	for i := 0; i < len(s); i++ {
		if !ok(s[i]) {
			return false
		}
	}
	return true
}

func lowerOrDigit(c byte) bool { return c >= 'a' && c <= 'z' || c >= '0' && c <= '9' }

func alnum(c byte) bool { return lowerOrDigit(c) || c >= 'A' && c <= 'Z' }

func word(c byte) bool { return alnum(c) || c == '_' }

// dir is MODEL_DIR in the serving container.
func (s *modelSource) dir() string {
	if s.subPath != "" {
		return api.ModelMountPath + "/" + s.subPath
	}
	return api.ModelMountPath
}

// defaultName is the model label when api.AnnotationModelName is absent: the
// URI's last path element (without an hf:// revision or an oci:// tag or
// digest), made a valid label value.
func (s *modelSource) defaultName() string {
	r := s.rest
	if s.scheme == "hf" || s.scheme == "oci" {
		r, _, _ = strings.Cut(r, "@")
	}
	if i := strings.IndexAny(r, "?#"); i >= 0 {
		r = r[:i]
	}
	r = strings.TrimRight(r, "/")
	if i := strings.LastIndexByte(r, '/'); i >= 0 {
		r = r[i+1:]
	}
	if s.scheme == "oci" {
		r, _, _ = strings.Cut(r, ":")
	}
	return sanitizeLabelValue(r)
}
