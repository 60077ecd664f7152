package cli

import (
	"fmt"
	"math"
	"net/url"
	"sort"

	"github.com/spf13/cobra"

	"github.com/gray-cluster/gray/head"
)

// statusAddr is the --address flag or the status address of the pool
// started on this machine.
func statusAddr(addr string) string {
	if addr != "" {
		return addr
	}
	for _, p := range readPids() {
		if p[1] != "" {
			addr = p[1]
		}
	}
	if addr == "" {
		addr = "127.0.0.1:8265"
	}
	return addr
}

func billingCmd() *cobra.Command {
	var addr string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "billing",
		Short: "Show balances (clients, escrows, providers, protocol) and payouts of a pool",
		RunE: func(cmd *cobra.Command, _ []string) error {
			var st head.BillingStatus
			if err := getJSON(statusAddr(addr), "/api/gray/billing", &st); err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if asJSON {
				return writeJSON(out, st)
			}
			if !st.Enabled {
				fmt.Fprintln(out, "Billing is off (start the head with --ledger FILE).")
				return nil
			}
			keys := make([]string, 0, len(st.Balances))
			for k := range st.Balances {
				keys = append(keys, k)
			}
			sort.Strings(keys)
			fmt.Fprintf(out, "%-70s %16s\n", "ACCOUNT", "BALANCE (USD)")
			for _, k := range keys {
				fmt.Fprintf(out, "%-70s %16.6f\n", k, float64(st.Balances[k])/1e6)
			}
			if len(st.Payouts) > 0 {
				fmt.Fprintf(out, "\n%-40s %-6s %14s %-10s %s\n", "PAYOUT", "ASSET", "AMOUNT", "STATE", "RECIPIENT")
				for _, p := range st.Payouts {
					fmt.Fprintf(out, "%-40s %-6s %14d %-10s %s\n", p.ID, p.Asset, p.Amount, p.State, p.Recipient)
				}
			}
			return nil
		},
	}
	cmd.PersistentFlags().StringVar(&addr, "address", "", "status address of the head (default: the pool started here)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")

	entries := &cobra.Command{
		Use:   "entries ACCOUNT",
		Short: "Show the history of one ledger account, e.g. escrow:01000000 (operator token needed)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var es []head.BillingEntry
			if err := getJSON(statusAddr(addr), "/api/gray/billing/entries?account="+url.QueryEscape(args[0]), &es); err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if asJSON {
				return writeJSON(out, es)
			}
			fmt.Fprintf(out, "%6s %-20s %14s %14s %s\n", "SEQ", "TIME", "AMOUNT (USD)", "BALANCE (USD)", "TRANSACTION")
			for _, e := range es {
				fmt.Fprintf(out, "%6d %-20s %14.6f %14.6f %s\n", e.Seq, e.At.UTC().Format("2006-01-02 15:04:05"),
					float64(e.Amount)/1e6, float64(e.Balance)/1e6, e.TxID)
			}
			return nil
		},
	}
	entries.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	cmd.AddCommand(entries)

	var account, id string
	var usd float64
	deposit := &cobra.Command{
		Use:   "deposit",
		Short: "Credit a client account (the account of its tokens, see `gray token`) with USD (operator token needed)",
		RunE: func(cmd *cobra.Command, _ []string) error {
			if usd <= 0 || math.IsNaN(usd) || math.IsInf(usd, 0) {
				return fmt.Errorf("--usd must be positive")
			}
			q := url.Values{"account": {account}, "micro_usd": {fmt.Sprint(int64(math.Round(usd * 1e6)))}}
			if id != "" {
				q.Set("id", id)
			}
			if err := post(statusAddr(addr), "/api/gray/billing/deposit", q); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "Deposited %.6f USD to %s.\n", usd, account)
			return nil
		},
	}
	deposit.Flags().StringVar(&account, "account", "default", "client account (\"default\" is everyone's when the head runs with --auth-mode disabled)")
	deposit.Flags().Float64Var(&usd, "usd", 0, "amount in USD")
	deposit.Flags().StringVar(&id, "id", "", "idempotency key (a deposit with a used id changes nothing)")
	payout := &cobra.Command{
		Use:   "payout",
		Short: "Pay provider balances out now (USDC on Solana)",
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := post(statusAddr(addr), "/api/gray/billing/payout", url.Values{}); err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), "Payout pass done; see `gray billing`.")
			return nil
		},
	}
	cmd.AddCommand(deposit, payout)
	return cmd
}
