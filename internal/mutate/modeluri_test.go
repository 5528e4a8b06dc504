package mutate

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

const digest = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

// TestModelURIAccepted: every scheme's forms, with the warnings they earn.
func TestModelURIAccepted(t *testing.T) {
	presigned := `annotation mlplane.io/model-uri: the URI has a query (a presigned URL or a SAS token?); it is in the pod spec and in the serving container's MODEL_URI, readable by anyone who can read the pod, until it expires. Prefer a Secret named by mlplane.io/model-secret`
	for _, tc := range []struct {
		uri, image, warning string
	}{
		{uri: "s3://models/bert/v3/"},
		{uri: "s3://bucket"},
		{uri: "s3://my.bucket-2/x"},
		{uri: "s3://" + strings.Repeat("a", 63) + "/x"},
		{uri: "gs://my_bucket/llama"},
		{uri: "gs://" + strings.Repeat("a", 63) + "." + strings.Repeat("b", 63) + "." + strings.Repeat("c", 63) + "/x"},
		{uri: "hf://gpt2"},
		{uri: "hf://meta-llama/Llama-3.1-8B-Instruct"},
		{uri: "hf://org/model@main"},
		{uri: "hf://org/model@refs/pr/1"},
		{uri: "hf://_org/model_"},
		{uri: "hf://" + strings.Repeat("a", 48) + "/" + strings.Repeat("b", 47)},
		{uri: "https://example.com/models/model.tar.gz"},
		{uri: "https://example.com:8443/a/b?X-Amz-Signature=abc", warning: presigned},
		{uri: "https://acct.blob.core.windows.net/models/llama"},
		{uri: "https://acct.blob.core.windows.net/models"},
		{uri: "https://acct.blob.core.windows.net/models/llama?sv=2024&sig=abc", warning: presigned},
		{uri: "azblob://acct/models"},
		{uri: "azblob://acct/my-models/llama/v1"},
		{uri: "oci://ghcr.io/org/model:v1", image: "ghcr.io/org/model:v1"},
		{uri: "oci://localhost:5000/model:1", image: "localhost:5000/model:1"},
		{uri: "oci://localhost/model:1", image: "localhost/model:1"},
		{uri: "oci://registry.example.com:5000/a/b/c:latest", image: "registry.example.com:5000/a/b/c:latest"},
		{uri: "oci://docker.io/library/model:1", image: "docker.io/library/model:1"},
		{uri: "oci://ghcr.io/org/model@" + digest, image: "ghcr.io/org/model@" + digest},
		{uri: "oci://ghcr.io/org/model:v1@" + digest, image: "ghcr.io/org/model:v1@" + digest},
		{uri: "pvc://model-store/mistral/7b"},
		{uri: "pvc://claim"},
	} {
		t.Run(tc.uri, func(t *testing.T) {
			var warnings []string
			src, err := parseModelURI(tc.uri, &warnings)
			if err != nil {
				t.Fatal(err)
			}
			if src.uri != tc.uri || src.image != tc.image {
				t.Errorf("uri %q image %q, want %q %q", src.uri, src.image, tc.uri, tc.image)
			}
			var want []string
			if tc.warning != "" {
				want = []string{tc.warning}
			}
			if d := cmp.Diff(want, warnings); d != "" {
				t.Errorf("warnings (-want +got):\n%s", d)
			}
		})
	}
}

// TestModelURIDenied: what can be judged at admission is denied, each with
// its exact message.
func TestModelURIDenied(t *testing.T) {
	const (
		all   = "want s3://BUCKET/PREFIX, gs://BUCKET/PREFIX, hf://ORG/MODEL[@REVISION], https://HOST/PATH, azblob://ACCOUNT/CONTAINER[/PREFIX], oci://REGISTRY/REPOSITORY:TAG (or @sha256:DIGEST) or pvc://CLAIM/PATH"
		s3    = "; want s3://BUCKET/PREFIX"
		gs    = "; want gs://BUCKET/PREFIX"
		hf    = "; want hf://ORG/MODEL[@REVISION] or hf://MODEL[@REVISION]"
		https = "; want https://HOST/PATH"
		azure = "; want azblob://ACCOUNT/CONTAINER[/PREFIX] or https://ACCOUNT.blob.core.windows.net/CONTAINER[/PREFIX]"
		oci   = "; want oci://REGISTRY/REPOSITORY:TAG or oci://REGISTRY/REPOSITORY@sha256:DIGEST"
		pvc   = "; want pvc://CLAIM/PATH"

		s3Rule    = ` is not a valid S3 bucket name (3 to 63 lowercase letters, digits, '.' and '-', starting and ending with a letter or digit)`
		gsRule    = ` is not a valid Cloud Storage bucket name (3 to 63 lowercase letters, digits, '-', '_' and '.' (up to 222 with dots, at most 63 between two dots), starting and ending with a letter or digit)`
		repoRule  = ` is not a valid Hugging Face repository id (letters, digits, '-', '_' and '.', each part starting and ending with a letter, digit or '_', no "--" or "..", at most 96 characters)`
		account   = ` is not a valid Azure storage account name (3 to 24 lowercase letters and digits)`
		container = ` is not a valid Azure container name (3 to 63 lowercase letters, digits and single hyphens, starting and ending with a letter or digit)`
		creds     = `credentials in a URI are visible to anyone who can read the pod; put them in a Secret named by mlplane.io/model-secret`
	)
	long := strings.Repeat("a", 64)
	for _, tc := range []struct{ uri, want string }{
		{"ftp://host/model", `"ftp://host/model": unsupported scheme "ftp"; ` + all},
		{"/models/llama", `"/models/llama": no scheme; ` + all},
		{"s3://my bucket/x", `"s3://my bucket/x": it contains white space; ` + all},

		{"s3://", `"s3://": no bucket` + s3},
		{"s3:///x", `"s3:///x": no bucket` + s3},
		{"s3://ab/x", `"s3://ab/x": bucket "ab"` + s3Rule + s3},
		{"s3://My-Bucket/x", `"s3://My-Bucket/x": bucket "My-Bucket"` + s3Rule + s3},
		{"s3://-bucket/x", `"s3://-bucket/x": bucket "-bucket"` + s3Rule + s3},
		{"s3://bucket./x", `"s3://bucket./x": bucket "bucket."` + s3Rule + s3},
		{"s3://my_bucket/x", `"s3://my_bucket/x": bucket "my_bucket"` + s3Rule + s3},
		{"s3://" + long, `"s3://` + long + `": bucket "` + long + `"` + s3Rule + s3},

		{"gs://", `"gs://": no bucket` + gs},
		{"gs://ab/x", `"gs://ab/x": bucket "ab"` + gsRule + gs},
		{"gs://Bucket/x", `"gs://Bucket/x": bucket "Bucket"` + gsRule + gs},
		{"gs://_bucket/x", `"gs://_bucket/x": bucket "_bucket"` + gsRule + gs},
		{"gs://" + long, `"gs://` + long + `": bucket "` + long + `"` + gsRule + gs},
		{"gs://" + long + ".b/x", `"gs://` + long + `.b/x": bucket "` + long + `.b"` + gsRule + gs},

		{"hf://", `"hf://": no repository` + hf},
		{"hf://@main", `"hf://@main": no repository` + hf},
		{"hf://org/model/sub", `"hf://org/model/sub": repository id "org/model/sub" has more than one "/" (choose files inside a repository with mlplane.io/model-allow-patterns)` + hf},
		{"hf://org/-model", `"hf://org/-model": repository id "org/-model"` + repoRule + hf},
		{"hf://org./model", `"hf://org./model": repository id "org./model"` + repoRule + hf},
		{"hf://org/", `"hf://org/": repository id "org/"` + repoRule + hf},
		{"hf://org--x/model", `"hf://org--x/model": repository id "org--x/model"` + repoRule + hf},
		{"hf://org/m..x", `"hf://org/m..x": repository id "org/m..x"` + repoRule + hf},
		{"hf://org/m+x", `"hf://org/m+x": repository id "org/m+x"` + repoRule + hf},
		{"hf://org/mödel", `"hf://org/mödel": repository id "org/mödel"` + repoRule + hf},
		{"hf://a/" + strings.Repeat("b", 95), `"hf://a/` + strings.Repeat("b", 95) + `": repository id "a/` + strings.Repeat("b", 95) + `"` + repoRule + hf},
		{"hf://org/model@", `"hf://org/model@": the revision after "@" is empty` + hf},

		{"http://host/model", `"http://host/model": http:// is refused: https is required` + https},
		{"https://host", `"https://host": no path` + https},
		{"https://host/", `"https://host/": no path` + https},
		{"https:///model", `"https:///model": no host` + https},
		{"https://host/%zz", `"https://host/%zz": not a valid URL: invalid URL escape "%zz"` + https},
		{"https://user:secret@host/m", `"https://user:xxxxx@host/m": it contains a user name or password: ` + creds + https},
		{"https://token@host/m", `"https://xxxxx@host/m": it contains a user name or password: ` + creds + https},

		{"https://ab.blob.core.windows.net/models/x", `"https://ab.blob.core.windows.net/models/x": storage account "ab"` + account + azure},
		{"https://acct.blob.core.windows.net/", `"https://acct.blob.core.windows.net/": no container` + azure},
		{"https://acct.blob.core.windows.net/Models/x", `"https://acct.blob.core.windows.net/Models/x": container "Models"` + container + azure},
		{"azblob://", `"azblob://": no storage account` + azure},
		{"azblob://acct", `"azblob://acct": no container` + azure},
		{"azblob://acct/", `"azblob://acct/": no container` + azure},
		{"azblob://Acct/models", `"azblob://Acct/models": storage account "Acct"` + account + azure},
		{"azblob://" + strings.Repeat("a", 25) + "/models", `"azblob://` + strings.Repeat("a", 25) + `/models": storage account "` + strings.Repeat("a", 25) + `"` + account + azure},
		{"azblob://acct/ab", `"azblob://acct/ab": container "ab"` + container + azure},
		{"azblob://acct/my--models", `"azblob://acct/my--models": container "my--models"` + container + azure},
		{"azblob://acct/models-", `"azblob://acct/models-": container "models-"` + container + azure},
		{"azblob://acct/" + long, `"azblob://acct/` + long + `": container "` + long + `"` + container + azure},
		{"azblob://key@acct/models", `"azblob://xxxxx@acct/models": it contains a user name or key: ` + creds + azure},
		{"azblob://acct/models/x?sv=1&sig=secret", `"azblob://acct/models/x?...": an azblob:// URI has no query or fragment (a SAS token belongs in the Secret named by mlplane.io/model-secret)` + azure},

		{"oci://", `"oci://": no image reference` + oci},
		{"oci:///model:1", `"oci:///model:1": no registry` + oci},
		{"oci://model:v1", `"oci://model:v1": "model:v1" is not REGISTRY/REPOSITORY: the reference must name the registry host and the repository, as in ghcr.io/ORG/MODEL:TAG` + oci},
		{"oci://ghcr.io/", `"oci://ghcr.io/": "ghcr.io/" is not REGISTRY/REPOSITORY: the reference must name the registry host and the repository, as in ghcr.io/ORG/MODEL:TAG` + oci},
		{"oci://org/model:v1", `"oci://org/model:v1": "org" is not a registry host: the reference must start with its registry, as in ghcr.io/ORG/MODEL:TAG or docker.io/library/NAME:TAG` + oci},
		{"oci://ghcr.io/org/model", `"oci://ghcr.io/org/model": no tag or digest: name the version to mount, as in :v1 or @sha256:DIGEST` + oci},
		{"oci://localhost:5000/model", `"oci://localhost:5000/model": no tag or digest: name the version to mount, as in :v1 or @sha256:DIGEST` + oci},
		{"oci://ghcr.io/Org/Model:v1", `"oci://ghcr.io/Org/Model:v1": not a valid image reference: repository can only contain the characters ` + "`abcdefghijklmnopqrstuvwxyz0123456789_-./`" + `: Org/Model` + oci},
		{"oci://ghcr.io/org/model:", `"oci://ghcr.io/org/model:": not a valid image reference: ghcr.io/org/model: must specify a tag name after the colon` + oci},
		{"oci://ghcr.io/org/model@sha256:abc", `"oci://ghcr.io/org/model@sha256:abc": not a valid image reference: invalid checksum digest length: sha256:abc` + oci},
		{"oci://docker.io/model:v1", `"oci://docker.io/model:v1": not a valid image reference: strict validation requires the full repository path (missing 'library')` + oci},
		{"oci://user:secret@ghcr.io/org/model:v1", `"oci://xxxxx@ghcr.io/org/model:v1": it contains a user name or password: the kubelet pulls with the pod's imagePullSecrets, and a loader with the Secret named by mlplane.io/model-secret` + oci},

		{"pvc://Bad_Claim/x", `"pvc://Bad_Claim/x": claim name "Bad_Claim" is not a valid PersistentVolumeClaim name` + pvc},
		{"pvc://claim/../other", `"pvc://claim/../other": the path may not contain ..` + pvc},
	} {
		t.Run(tc.uri, func(t *testing.T) {
			var warnings []string
			_, err := parseModelURI(tc.uri, &warnings)
			want := "annotation mlplane.io/model-uri: invalid value " + tc.want
			if err == nil || err.Error() != want {
				t.Errorf("error\n %v\nwant\n %s", err, want)
			}
			if len(warnings) > 0 {
				t.Errorf("warnings %q", warnings)
			}
		})
	}
}

func TestModelName(t *testing.T) {
	for uri, want := range map[string]string{
		"hf://meta-llama/Llama-3.1-8B-Instruct": "Llama-3.1-8B-Instruct",
		"hf://org/model@refs/pr/1":              "model",
		"hf://gpt2@main":                        "gpt2",
		"s3://bucket/models/bert/":              "bert",
		"s3://bucket":                           "bucket",
		"https://h/x/model.tar.gz?sig=a/b":      "model.tar.gz",
		"azblob://acct/models/llama":            "llama",
		"oci://ghcr.io/org/llama:v1":            "llama",
		"oci://localhost:5000/llama@" + digest:  "llama",
		"gs://b/weird name+v1":                  "weird-name-v1",
		"pvc://claim":                           "claim",
	} {
		src, err := parseModelURI(uri, new([]string))
		if uri == "gs://b/weird name+v1" {
			src, err = modelSource{rest: "b/weird name+v1"}, nil
		}
		if err != nil {
			t.Fatal(err)
		}
		if got := src.defaultName(); got != want {
			t.Errorf("%s: name %q, want %q", uri, got, want)
		}
	}
}
