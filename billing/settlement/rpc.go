package settlement

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/gagliardetto/solana-go"
	"github.com/gagliardetto/solana-go/rpc"
	"github.com/gagliardetto/solana-go/rpc/jsonrpc"
)

// Commitment is how settled a transaction is, as getSignatureStatuses says.
type Commitment string

// Commitment levels, weakest first.
const (
	Processed Commitment = "processed"
	Confirmed Commitment = "confirmed"
	Finalized Commitment = "finalized"
)

func (c Commitment) rank() int {
	switch c {
	case Processed:
		return 1
	case Confirmed:
		return 2
	case Finalized:
		return 3
	}
	return 0
}

// atLeast reports whether c is as settled as want.
func (c Commitment) atLeast(want Commitment) bool { return c.rank() >= want.rank() && c.rank() > 0 }

// Blockhash is a recent blockhash and the last block height at which a
// transaction using it can still be included.
type Blockhash struct {
	Hash                 solana.Hash
	LastValidBlockHeight uint64
}

// SignatureStatus is what the chain knows of a signature it has seen.
type SignatureStatus struct {
	Slot       uint64
	Err        any // non-nil: the transaction landed but failed
	Commitment Commitment
}

// RPC is the part of Solana's JSON-RPC API the settler uses. Errors other
// than ErrAccountNotFound should wrap ErrRPC.
type RPC interface {
	// GetLatestBlockhash returns a blockhash to build transactions with.
	GetLatestBlockhash(ctx context.Context) (Blockhash, error)
	// GetBlockHeight returns the FINALIZED block height. Expiry is proven
	// with it: a confirmed block past lastValidBlockHeight could still be
	// abandoned for a fork where the transaction lands.
	GetBlockHeight(ctx context.Context) (uint64, error)
	// SendTransaction submits a signed wire-format transaction.
	SendTransaction(ctx context.Context, tx []byte) (solana.Signature, error)
	// GetSignatureStatuses returns one entry per signature, nil for
	// signatures the node has never seen; it must search the transaction
	// history, not only the recent status cache. At most 256 signatures.
	GetSignatureStatuses(ctx context.Context, sigs []solana.Signature) ([]*SignatureStatus, error)
	// GetBalance returns an account's lamports (0 for a missing account).
	GetBalance(ctx context.Context, account solana.PublicKey) (uint64, error)
	// GetTokenAccountBalance returns a token account's amount in base units,
	// or an error wrapping ErrAccountNotFound.
	GetTokenAccountBalance(ctx context.Context, account solana.PublicKey) (uint64, error)
}

// Client implements RPC with solana-go's JSON-RPC client.
type Client struct {
	cl *rpc.Client
	// Commitment is used for blockhashes, balances and preflight; default
	// finalized. GetBlockHeight always reads finalized.
	Commitment rpc.CommitmentType
}

// NewClient returns a Client for the JSON-RPC endpoint at url, reading at
// finalized commitment.
func NewClient(url string) *Client {
	return &Client{cl: rpc.New(url), Commitment: rpc.CommitmentFinalized}
}

// NodeError is a JSON-RPC error object returned by the node, e.g. a
// sendTransaction whose preflight simulation failed (code -32002).
type NodeError struct {
	Method  string
	Code    int
	Message string
	Data    any
}

func (e *NodeError) Error() string {
	return fmt.Sprintf("%s: node error %d: %s", e.Method, e.Code, e.Message)
}

func rpcErr(method string, err error) error {
	if re := (*jsonrpc.RPCError)(nil); errors.As(err, &re) {
		return fmt.Errorf("%w: %w", ErrRPC, &NodeError{Method: method, Code: re.Code, Message: re.Message, Data: re.Data})
	}
	return fmt.Errorf("%w: %s: %w", ErrRPC, method, err)
}

// GetLatestBlockhash implements RPC.
func (c *Client) GetLatestBlockhash(ctx context.Context) (Blockhash, error) {
	out, err := c.cl.GetLatestBlockhash(ctx, c.Commitment)
	if err != nil {
		return Blockhash{}, rpcErr("getLatestBlockhash", err)
	}
	if out == nil || out.Value == nil || out.Value.Blockhash.IsZero() {
		return Blockhash{}, rpcErr("getLatestBlockhash", errors.New("empty result"))
	}
	return Blockhash{Hash: out.Value.Blockhash, LastValidBlockHeight: out.Value.LastValidBlockHeight}, nil
}

// GetBlockHeight implements RPC: the finalized block height.
func (c *Client) GetBlockHeight(ctx context.Context) (uint64, error) {
	h, err := c.cl.GetBlockHeight(ctx, rpc.CommitmentFinalized)
	if err != nil {
		return 0, rpcErr("getBlockHeight", err)
	}
	return h, nil
}

// SendTransaction implements RPC, with preflight at c.Commitment.
func (c *Client) SendTransaction(ctx context.Context, tx []byte) (solana.Signature, error) {
	sig, err := c.cl.SendRawTransactionWithOpts(ctx, tx, rpc.TransactionOpts{
		Encoding:            solana.EncodingBase64,
		PreflightCommitment: c.Commitment,
	})
	if err != nil {
		return solana.Signature{}, rpcErr("sendTransaction", err)
	}
	return sig, nil
}

// GetSignatureStatuses implements RPC, searching the transaction history.
func (c *Client) GetSignatureStatuses(ctx context.Context, sigs []solana.Signature) ([]*SignatureStatus, error) {
	if len(sigs) == 0 {
		return nil, nil
	}
	out, err := c.cl.GetSignatureStatuses(ctx, true, sigs...)
	if err != nil {
		return nil, rpcErr("getSignatureStatuses", err)
	}
	if len(out.Value) != len(sigs) {
		return nil, rpcErr("getSignatureStatuses", fmt.Errorf("%d statuses for %d signatures", len(out.Value), len(sigs)))
	}
	res := make([]*SignatureStatus, len(sigs))
	for i, v := range out.Value {
		if v == nil {
			continue
		}
		res[i] = &SignatureStatus{Slot: v.Slot, Err: v.Err, Commitment: Commitment(v.ConfirmationStatus)}
		if v.ConfirmationStatus == "" && v.Confirmations == nil {
			// Old nodes omit confirmationStatus; null confirmations means rooted.
			res[i].Commitment = Finalized
		}
	}
	return res, nil
}

// GetBalance implements RPC.
func (c *Client) GetBalance(ctx context.Context, account solana.PublicKey) (uint64, error) {
	out, err := c.cl.GetBalance(ctx, account, c.Commitment)
	if err != nil {
		return 0, rpcErr("getBalance", err)
	}
	return out.Value, nil
}

// GetTokenAccountBalance implements RPC.
func (c *Client) GetTokenAccountBalance(ctx context.Context, account solana.PublicKey) (uint64, error) {
	out, err := c.cl.GetTokenAccountBalance(ctx, account, c.Commitment)
	if err != nil {
		if re := (*jsonrpc.RPCError)(nil); errors.As(err, &re) && strings.Contains(re.Message, "could not find account") {
			return 0, fmt.Errorf("%w: token account %s", ErrAccountNotFound, account)
		}
		return 0, rpcErr("getTokenAccountBalance", err)
	}
	if out == nil || out.Value == nil {
		return 0, rpcErr("getTokenAccountBalance", errors.New("empty result"))
	}
	n, err := strconv.ParseUint(out.Value.Amount, 10, 64)
	if err != nil {
		return 0, rpcErr("getTokenAccountBalance", fmt.Errorf("amount %q: %w", out.Value.Amount, err))
	}
	return n, nil
}
