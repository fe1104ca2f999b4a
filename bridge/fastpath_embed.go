//go:build fastpath

package bridge

import _ "embed"

// wsgibridge/fastcgi/_fastpath.so is built from fastpath.c beside it by
// make build (named for the module it defines, _fastpath, so that it
// cannot stand in for fastpath.py).
//
//go:embed wsgibridge/fastcgi/_fastpath.so
var fastPathObject []byte

func init() { fastPath = fastPathObject }
