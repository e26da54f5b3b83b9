//go:build !unix

package rendezvous

import "syscall"

// canPeek says whether idle connections can wait in a readiness check
// on the socket; here they cannot, so each keeps a reader goroutine
// parked in its read.
const canPeek = false

func readNow(uintptr, []byte) (int, syscall.Errno) { return 0, 0 }

func wouldBlock(syscall.Errno) bool { return false }
