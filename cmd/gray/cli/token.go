package cli

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"time"

	"github.com/spf13/cobra"

	"github.com/gray-cluster/gray/auth"
	"github.com/gray-cluster/gray/head"
)

func tokenCmd() *cobra.Command {
	var addr string
	cmd := &cobra.Command{
		Use:   "token",
		Short: "Create, list and revoke the tokens clients authenticate with (operator token needed)",
	}
	cmd.PersistentFlags().StringVar(&addr, "address", "", "status address of the head (default: the pool started here)")

	var account, note string
	var operator, asJSON bool
	create := &cobra.Command{
		Use:   "create",
		Short: "Create a token bound to an account; it is printed once and only its hash is kept",
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := auth.ValidAccount(account); err != nil {
				return err
			}
			q := url.Values{"account": {account}}
			if operator {
				q.Set("operator", "true")
			}
			if note != "" {
				q.Set("note", note)
			}
			body, err := apiCall(statusAddr(addr), http.MethodPost, "/api/gray/tokens", q, 10*time.Second)
			if err != nil {
				return err
			}
			var t head.CreatedToken
			if err := json.Unmarshal(body, &t); err != nil {
				return fmt.Errorf("bad reply: %w", err)
			}
			out := cmd.OutOrStdout()
			if asJSON {
				return json.NewEncoder(out).Encode(t)
			}
			fmt.Fprintln(out, t.Token)
			fmt.Fprintf(cmd.ErrOrStderr(), "Token %s for account %s (shown once). Clients use it with\n"+
				"  RAY_AUTH_MODE=token RAY_AUTH_TOKEN=<token>  (or RAY_AUTH_TOKEN_PATH=<file>)\n", t.ID, t.Account)
			return nil
		},
	}
	create.Flags().StringVar(&account, "account", "", "account the token acts and is billed for")
	create.Flags().BoolVar(&operator, "operator", false, "an operator token (deposits, payouts, token management)")
	create.Flags().StringVar(&note, "note", "", "a note shown in `gray token list`")
	create.Flags().BoolVar(&asJSON, "json", false, "print JSON (token included)")
	_ = create.MarkFlagRequired("account")

	var listJSON bool
	list := &cobra.Command{
		Use:   "list",
		Short: "List tokens: ids, accounts, dates (never the tokens)",
		RunE: func(cmd *cobra.Command, _ []string) error {
			var ts []auth.TokenInfo
			if err := getJSON(statusAddr(addr), "/api/gray/tokens", &ts); err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if listJSON {
				return json.NewEncoder(out).Encode(ts)
			}
			fmt.Fprintf(out, "%-16s  %-24s %-8s %-20s %s\n", "ID", "ACCOUNT", "ROLE", "CREATED", "REVOKED")
			for _, t := range ts {
				role, revoked := "user", "-"
				if t.Operator {
					role = "operator"
				}
				if !t.Revoked.IsZero() {
					revoked = t.Revoked.Format(time.DateTime)
				}
				fmt.Fprintf(out, "%-16s  %-24s %-8s %-20s %s\n", t.ID, t.Account, role, t.Created.Format(time.DateTime), revoked)
			}
			return nil
		},
	}
	list.Flags().BoolVar(&listJSON, "json", false, "print JSON")

	revoke := &cobra.Command{
		Use:   "revoke ID",
		Short: "Revoke a token: it is refused from its next request on",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := auth.ValidTokenID(args[0]); err != nil {
				return err
			}
			if err := post(statusAddr(addr), "/api/gray/tokens/revoke", url.Values{"id": {args[0]}}); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "Revoked token %s.\n", args[0])
			return nil
		},
	}
	cmd.AddCommand(create, list, revoke)
	return cmd
}
