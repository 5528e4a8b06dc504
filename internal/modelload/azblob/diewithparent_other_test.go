//go:build !linux

package azblob

import "syscall"

// dieWithParent is Linux-only; elsewhere TestMain's Kill has to do.
func dieWithParent() *syscall.SysProcAttr { return nil }
