//go:build !unix

package rendezvous

// canPeek says whether idle connections can wait in peekReadable; here
// they cannot, so each keeps a reader goroutine parked in its read.
const canPeek = false

func peekReadable(uintptr) bool { return true }
