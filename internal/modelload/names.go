package modelload

import "github.com/mlplane/mlplane/internal/api"

// Names the engine reserves in the destination directory.
const (
	// ManifestName is the completion marker written last (api.ModelManifestFile).
	ManifestName = api.ModelManifestFile
	// partialDir holds files still downloading and their resume state; it
	// is removed when the model is complete.
	partialDir = ".mlplane-partial"
)
