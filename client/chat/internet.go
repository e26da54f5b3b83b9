package chat

import "errors"

// ErrInternetUnavailable is returned by Start in internet mode until the
// bootstrap client is wired in.
var ErrInternetUnavailable = errors.New("chat: internet mode is not available in this build yet")

// startInternet starts the bootstrap-server client. Its updates are fed to
// the event loop through ls.internet as registry observations with
// SourceBootstrap.
func (n *Node) startInternet(ls *loopState) error {
	return ErrInternetUnavailable
}
