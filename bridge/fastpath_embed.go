//go:build fastpath

package bridge

import _ "embed"

// fastpath/fastpath.so is built from fastpath/fastpath.c by make build.
//
//go:embed fastpath/fastpath.so
var fastPathObject []byte

func init() { fastPath = fastPathObject }
