package bridge

import (
	"io/fs"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestPythonBundles: every module of the embedded worker is in a bundle,
// after the modules it imports at its top (the bootstrap runs them in
// the bundle's order), and the cgi and http modes' bundle does without
// the FastCGI responder.
func TestPythonBundles(t *testing.T) {
	all := append(append([]string{}, pipeModules...), fastCGIModules...)
	var files []string
	require.NoError(t, fs.WalkDir(pythonFiles, ".", func(path string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			files = append(files, path)
		}
		return err
	}))
	var listed []string
	for _, m := range all {
		listed = append(listed, modulePath(m))
	}
	slices.Sort(files)
	slices.Sort(listed)
	assert.Equal(t, files, listed, "every embedded module is in a bundle, once")

	topImport := regexp.MustCompile(`(?m)^(?:from (wsgibridge[.\w]*) import (\w+)|import (wsgibridge[.\w]*))`)
	for i, m := range all {
		src, err := pythonFiles.ReadFile(modulePath(m))
		require.NoError(t, err)
		for _, imp := range topImport.FindAllStringSubmatch(string(src), -1) {
			dep := imp[1] + imp[3]
			if imp[1] != "" && slices.Contains(all, imp[1]+"."+imp[2]) {
				dep = imp[1] + "." + imp[2] // "from wsgibridge import wsgi" imports the module
			}
			at := slices.Index(all, dep)
			assert.True(t, at >= 0 && at < i, "%s imports %s, which must come before it", m, dep)
		}
	}
	for _, m := range pipeModules {
		assert.False(t, strings.HasPrefix(m, "wsgibridge.fastcgi"), m)
	}
	assert.Contains(t, string(pipeBundle().data), "wsgibridge.main bridge/wsgibridge/main.py ")
	assert.NotContains(t, string(pipeBundle().data), "bridge/wsgibridge/fastcgi/")
	assert.NotEqual(t, pipeBundle().hash, fastCGIBundle().hash)
}
