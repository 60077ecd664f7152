package httpapi

import (
	"context"
	"errors"
	"net/http"
	"time"

	"github.com/coder/websocket"
)

// writeTimeout bounds sending one log chunk to a tail client.
const writeTimeout = 30 * time.Second

// tail streams a job's log over a WebSocket as text messages and closes
// it normally (1000) once the job is terminal: the stock client treats
// any other end as an error.
func (a *API) tail(w http.ResponseWriter, r *http.Request, id string) {
	// Unknown and DRIVER jobs are answered before the upgrade, as stock.
	if _, err := a.cfg.Manager.Submission(r.Context(), id); err != nil {
		a.fail(w, id, err, "Can only get logs of submission type jobs")
		return
	}
	c, err := websocket.Accept(w, r, nil)
	if err != nil {
		return // Accept has answered the bad handshake
	}
	c.SetReadLimit(1 << 20)
	// The client sends nothing but control frames; CloseRead handles them
	// and ends ctx when the client goes.
	ctx := c.CloseRead(r.Context())
	err = a.cfg.Manager.Tail(ctx, id, func(chunk string) error {
		wctx, cancel := context.WithTimeout(ctx, writeTimeout)
		defer cancel()
		return c.Write(wctx, websocket.MessageText, []byte(chunk))
	})
	switch {
	case err == nil:
		_ = c.Close(websocket.StatusNormalClosure, "")
	case ctx.Err() != nil && errors.Is(err, ctx.Err()):
		_ = c.CloseNow() // the client left
	default:
		a.log.Warn("log tail", "job", id, "err", err)
		_ = c.Close(websocket.StatusInternalError, "log tail failed")
	}
}
