package ledger

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// DefaultRedisPrefix is the key prefix OpenRedis uses when given "".
const DefaultRedisPrefix = "gray:ledger:"

// redisBackend keeps the ledger in Redis, under keys that start with prefix:
//
//	<prefix>meta          hash:   "version" → schemaVersion
//	<prefix>bal           hash:   account → balance, a decimal int64
//	<prefix>tx            hash:   id → JSON storedTx (as in bbolt)
//	<prefix>seq           string: the last transaction's Seq (INCR)
//	<prefix>closed        set:    closed accounts
//	<prefix>hist:<acct>   list:   the account's JSON redisPostings, oldest first
//
// Every change is made by one Lua script (postScript, closeScript), which
// Redis runs atomically: it reads and checks everything first, then writes,
// so a script that fails writes nothing, and no other client sees or
// interleaves with it. Several Ledgers, in several processes, may share one
// database and prefix; they serialize in Redis as bbolt writers do in a file.
//
// Amounts and balances keep the full int64 range: the scripts never hold
// one in a Lua number (a double, exact only to 2^53) but do exact decimal
// arithmetic on nine-digit limbs (see luaLib).
type redisBackend struct {
	c                             *redis.Client
	prefix                        string
	kMeta, kBal, kTx, kSeq, kClos string
}

// redisPosting is an element of a hist list: a storedPosting with its Seq.
type redisPosting struct {
	Seq uint64 `json:"seq"`
	storedPosting
}

// txTail is the part of a storedTx the scripts receive ready-made; they add
// seq and entries in front.
type txTail struct {
	Memo string    `json:"memo,omitempty"`
	At   time.Time `json:"at"`
}

// OpenRedis opens the ledger kept in the Redis database at url (see
// redis.ParseURL: "redis://[user:password@]host:port/db?option=value",
// "rediss://" for TLS, "unix:///path?db=N"), under keys starting with
// prefix (DefaultRedisPrefix if ""). Ledgers opened on the same database and
// prefix, in any number of processes, share one ledger and may post to it
// concurrently.
//
// ctx bounds only the connection check and schema check done here; later
// calls are bounded by the client's timeouts, which url may set
// (dial_timeout, read_timeout, write_timeout, max_retries). go-redis retries
// a command after a network error; a Post retried after it was applied fails
// with ErrDuplicate, which callers already treat as done.
//
// Durability is the server's: a Post is acknowledged once the server has
// applied it, and survives a crash only as its persistence (appendonly,
// appendfsync) and replication (WAIT is not used) allow. The client talks
// to one server (a primary, or a failover endpoint in front of one), not to
// a Redis Cluster. The scripts declare every key they touch, so a prefix
// with a hash tag ("{gray}:ledger:") would keep a ledger in one cluster slot.
func OpenRedis(ctx context.Context, rawURL string, prefix string) (*Ledger, error) {
	opt, err := redis.ParseURL(rawURL)
	if err != nil {
		var ue *url.Error // it quotes the URL, which may hold a password
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return nil, fmt.Errorf("ledger: open redis: bad url: %w", err)
	}
	if prefix == "" {
		prefix = DefaultRedisPrefix
	}
	r := &redisBackend{c: redis.NewClient(opt), prefix: prefix,
		kMeta: prefix + "meta", kBal: prefix + "bal", kTx: prefix + "tx", kSeq: prefix + "seq", kClos: prefix + "closed"}
	if err := r.checkSchema(ctx); err != nil {
		r.c.Close()
		return nil, fmt.Errorf("ledger: open redis %s prefix %q: %w", opt.Addr, prefix, err)
	}
	return &Ledger{b: r}, nil
}

func (r *redisBackend) checkSchema(ctx context.Context) error {
	set, err := r.c.HSetNX(ctx, r.kMeta, "version", schemaVersion).Result()
	if err != nil {
		return redisErr(err)
	}
	if set {
		return nil
	}
	v, err := r.c.HGet(ctx, r.kMeta, "version").Result()
	if err != nil {
		return redisErr(err)
	}
	if v != schemaVersion {
		return fmt.Errorf("%w: schema version %q, want %q", ErrCorrupt, v, schemaVersion)
	}
	return nil
}

// bg is the context of calls after OpenRedis: the public API takes none.
var bg = context.Background()

func (r *redisBackend) hist(account string) string { return r.prefix + "hist:" + account }

func (r *redisBackend) close() error { return r.c.Close() }

// redisErr wraps an error from Redis; a key of the wrong type (WRONGTYPE),
// which this package never writes, is ErrCorrupt.
func redisErr(err error) error {
	if redis.HasErrorPrefix(err, "WRONGTYPE") {
		return fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	return fmt.Errorf("ledger: redis: %w", err)
}

func parseBalance(account, v string) (int64, error) {
	b, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%w: balance of %s is %q", ErrCorrupt, account, v)
	}
	return b, nil
}

func (r *redisBackend) balance(account string) (int64, error) {
	v, err := r.c.HGet(bg, r.kBal, account).Result()
	switch {
	case errors.Is(err, redis.Nil):
		return 0, nil
	case err != nil:
		return 0, redisErr(err)
	}
	return parseBalance(account, v)
}

func (r *redisBackend) balances() (map[string]int64, error) {
	all, err := r.c.HGetAll(bg, r.kBal).Result()
	if err != nil {
		return nil, redisErr(err)
	}
	out := make(map[string]int64, len(all))
	for acct, v := range all {
		if out[acct], err = parseBalance(acct, v); err != nil {
			return nil, err
		}
	}
	return out, nil
}

func (r *redisBackend) isClosed(account string) (bool, error) {
	closed, err := r.c.SIsMember(bg, r.kClos, account).Result()
	if err != nil {
		return false, redisErr(err)
	}
	return closed, nil
}

func (r *redisBackend) transaction(id string) (Transaction, bool, error) {
	v, err := r.c.HGet(bg, r.kTx, id).Result()
	switch {
	case errors.Is(err, redis.Nil):
		return Transaction{}, false, nil
	case err != nil:
		return Transaction{}, false, redisErr(err)
	}
	var st storedTx
	if err := json.Unmarshal([]byte(v), &st); err != nil {
		return Transaction{}, false, fmt.Errorf("%w: transaction %s: %v", ErrCorrupt, id, err)
	}
	return Transaction{ID: id, Entries: st.Entries, Memo: st.Memo, At: st.At}, true, nil
}

// entries reads the account's list, then its transactions' memos and times.
// Transactions are never changed or removed once written, and a posting is
// written with its transaction, so the two reads need not be one snapshot.
func (r *redisBackend) entries(account string) ([]Posting, error) {
	raw, err := r.c.LRange(bg, r.hist(account), 0, -1).Result()
	if err != nil {
		return nil, redisErr(err)
	}
	if len(raw) == 0 {
		return nil, nil
	}
	out := make([]Posting, len(raw))
	ids := make([]string, len(raw))
	for i, v := range raw {
		var rp redisPosting
		if json.Unmarshal([]byte(v), &rp) != nil || rp.Seq == 0 || rp.TxID == "" {
			return nil, fmt.Errorf("%w: history of %s", ErrCorrupt, account)
		}
		out[i] = Posting{Seq: rp.Seq, TxID: rp.TxID, Amount: rp.Amount, Balance: rp.Balance}
		ids[i] = rp.TxID
	}
	txs, err := r.c.HMGet(bg, r.kTx, ids...).Result()
	if err != nil {
		return nil, redisErr(err)
	}
	for i, v := range txs {
		var st storedTx
		s, ok := v.(string)
		if !ok {
			return nil, fmt.Errorf("%w: history of %s names missing transaction %s", ErrCorrupt, account, ids[i])
		}
		if err := json.Unmarshal([]byte(s), &st); err != nil {
			return nil, fmt.Errorf("%w: history of %s names transaction %s: %v", ErrCorrupt, account, ids[i], err)
		}
		out[i].Memo, out[i].At = st.Memo, st.At
	}
	return out, nil
}

func (r *redisBackend) post(t Transaction) error {
	tail, err := json.Marshal(txTail{Memo: t.Memo, At: t.At.Round(0).UTC()})
	if err != nil {
		return fmt.Errorf("ledger: %s: %w", t.ID, err)
	}
	keys := make([]string, 0, 4+len(t.Entries))
	keys = append(keys, r.kBal, r.kTx, r.kClos, r.kSeq)
	args := make([]any, 0, 2+2*len(t.Entries))
	args = append(args, t.ID, tail)
	for _, e := range t.Entries {
		keys = append(keys, r.hist(e.Account))
		args = append(args, e.Account)
	}
	for _, e := range t.Entries {
		args = append(args, strconv.FormatInt(e.Amount, 10))
	}
	reply, err := postScript.Run(bg, r.c, keys, args...).Slice()
	if err != nil {
		return redisErr(err)
	}
	return scriptResult(t.ID, t.Entries, reply)
}

func (r *redisBackend) closeEscrow(escrow, client, id, memo string, at time.Time) (int64, error) {
	tail, err := json.Marshal(txTail{Memo: memo, At: at.Round(0).UTC()})
	if err != nil {
		return 0, fmt.Errorf("ledger: %s: %w", id, err)
	}
	keys := []string{r.kBal, r.kTx, r.kClos, r.kSeq, r.hist(escrow), r.hist(client)}
	reply, err := closeScript.Run(bg, r.c, keys, escrow, client, id, tail).Slice()
	if err != nil {
		return 0, redisErr(err)
	}
	if len(reply) == 1 && reply[0] == "ALREADY_CLOSED" {
		return 0, fmt.Errorf("%w: %s already closed", ErrDuplicate, escrow)
	}
	// Every other reply ends with the escrow's balance.
	s, _ := reply[len(reply)-1].(string)
	refund, perr := strconv.ParseInt(s, 10, 64)
	if perr != nil {
		return 0, fmt.Errorf("ledger: redis: close script replied %q", reply)
	}
	if err := scriptResult(id, []Entry{{escrow, -refund}, {client, refund}}, reply[:len(reply)-1]); err != nil {
		return 0, err
	}
	return refund, nil
}

// scriptResult turns the reply of the post function in luaLib, for the
// transaction id with these entries, into this package's errors.
func scriptResult(id string, entries []Entry, reply []any) error {
	str := func(i int) string {
		if i < len(reply) {
			s, _ := reply[i].(string)
			return s
		}
		return ""
	}
	switch str(0) {
	case "OK":
		return nil
	case "DUPLICATE": // the stored transaction; compared here, where int64s are exact
		var st storedTx
		if err := json.Unmarshal([]byte(str(1)), &st); err != nil {
			return fmt.Errorf("%w: transaction %s: %v", ErrCorrupt, id, err)
		}
		if !slices.Equal(st.Entries, entries) {
			return fmt.Errorf("%w: %s", ErrIDConflict, id)
		}
		return fmt.Errorf("%w: %s", ErrDuplicate, id)
	case "CLOSED":
		return fmt.Errorf("%w: %s: %s", ErrAccountClosed, id, str(1))
	case "OVERFLOW":
		return fmt.Errorf("%w: %s: balance of %s", ErrOverflow, id, str(1))
	case "FUNDS":
		var need int64
		for _, e := range entries {
			if e.Account == str(1) {
				need = -e.Amount
			}
		}
		return fmt.Errorf("%w: %s: %s has %s, needs %d", ErrInsufficientFunds, id, str(1), str(2), need)
	case "CORRUPT":
		return fmt.Errorf("%w: %s", ErrCorrupt, str(1))
	}
	return fmt.Errorf("ledger: redis: %s: unexpected script reply %q", id, reply)
}

// luaLib is the start of both scripts: exact int64 arithmetic, and post.
//
// Lua numbers are doubles, exact only to 2^53, so a value is never held in
// one: it is parsed from its decimal string into two limbs, h*1e9 + l with
// 0 <= l < 1e9 and |h| <= 9223372037, whose sums stay far below 2^53, and
// formatted back into a decimal string. Overflow past int64 is detected
// exactly (ErrOverflow), as in bbolt, so both backends accept the same
// amounts and balances: the whole int64 range.
const luaLib = `
local B = 1000000000
local MAXH, MAXL = 9223372036, 854775807  -- 2^63-1 = MAXH*B + MAXL
local MINH, MINL = -9223372037, 145224192 -- -2^63  = MINH*B + MINL

local function inrange(h, l)
  return (h > MINH or (h == MINH and l >= MINL)) and (h < MAXH or (h == MAXH and l <= MAXL))
end

-- parse reads a decimal int64 into limbs h, l; nil if s is not one.
local function parse(s)
  if type(s) ~= 'string' then return nil end
  local neg, d = string.match(s, '^(%-?)(%d+)$')
  if not d or #d > 19 then return nil end
  local h, l = 0, tonumber(string.sub(d, -9))
  if #d > 9 then h = tonumber(string.sub(d, 1, -10)) end
  if neg == '-' and l > 0 then
    h, l = -h - 1, B - l
  elseif neg == '-' then
    h = -h
  end
  if not inrange(h, l) then return nil end
  return h, l
end

local function add(h1, l1, h2, l2)
  local h, l = h1 + h2, l1 + l2
  if l >= B then h, l = h + 1, l - B end
  return h, l
end

-- format writes limbs h, l as a canonical decimal string.
local function format(h, l)
  local sign = ''
  if h < 0 then
    sign = '-'
    if l > 0 then h, l = -h - 1, B - l else h = -h end
  end
  if h == 0 then return sign .. tostring(l) end
  local ls = tostring(l)
  return sign .. tostring(h) .. string.rep('0', 9 - #ls) .. ls
end

-- post applies the transaction id: accts[i] gets amts[i] (decimal strings);
-- tail is the JSON object {"memo":..,"at":..} to complete its record with.
-- KEYS: 1 bal, 2 tx, 3 closed, 4 seq, then 4+i the history of accts[i].
-- It reads and checks everything, returning {code, detail...} on the first
-- failure, in bbolt's order, before it writes anything; then {'OK', seq}.
local function post(id, accts, amts, tail)
  local prev = redis.call('HGET', KEYS[2], id)
  if prev then return {'DUPLICATE', prev} end
  for _, a in ipairs(accts) do
    if redis.call('SISMEMBER', KEYS[3], a) == 1 then return {'CLOSED', a} end
  end
  local after, canon = {}, {}
  for i, a in ipairs(accts) do
    local raw = redis.call('HGET', KEYS[1], a) or '0'
    local bh, bl = parse(raw)
    if not bh then return {'CORRUPT', 'balance of ' .. a .. ' is ' .. raw} end
    local ah, al = parse(amts[i])
    if not ah then return redis.error_reply('ledger: bad amount ' .. tostring(amts[i])) end
    canon[i] = format(ah, al)
    local h, l = add(bh, bl, ah, al)
    if not inrange(h, l) then return {'OVERFLOW', a} end
    if h < 0 and string.sub(a, 1, 9) ~= 'external:' then return {'FUNDS', a, raw} end
    after[i] = format(h, l)
    local kind = redis.call('TYPE', KEYS[4 + i])['ok']
    if kind ~= 'none' and kind ~= 'list' then return {'CORRUPT', 'history of ' .. a .. ' is a ' .. kind} end
  end
  local last = redis.call('GET', KEYS[4])
  if last and not parse(last) then return {'CORRUPT', 'sequence is ' .. last} end
  if string.sub(tail, 1, 1) ~= '{' then return redis.error_reply('ledger: bad record tail') end

  -- Checked: from here on nothing fails.
  local seq = string.format('%.0f', redis.call('INCR', KEYS[4]))
  local ents = {}
  for i, a in ipairs(accts) do
    ents[i] = '{"account":' .. cjson.encode(a) .. ',"amount":' .. canon[i] .. '}'
  end
  redis.call('HSET', KEYS[2], id,
    '{"seq":' .. seq .. ',"entries":[' .. table.concat(ents, ',') .. '],' .. string.sub(tail, 2))
  local jid = cjson.encode(id)
  for i, a in ipairs(accts) do
    redis.call('HSET', KEYS[1], a, after[i])
    redis.call('RPUSH', KEYS[4 + i],
      '{"seq":' .. seq .. ',"tx":' .. jid .. ',"amount":' .. canon[i] .. ',"balance":' .. after[i] .. '}')
  end
  return {'OK', seq}
end
`

// postScript posts one transaction.
// KEYS: bal, tx, closed, seq, then the history of each entry's account.
// ARGV: id, tail (JSON txTail), the n accounts, then the n amounts.
var postScript = redis.NewScript(luaLib + `
local n = #KEYS - 4
if n < 1 or #ARGV ~= 2 + 2 * n then return redis.error_reply('ledger: bad post arguments') end
local accts, amts = {}, {}
for i = 1, n do
  accts[i], amts[i] = ARGV[2 + i], ARGV[2 + n + i]
end
return post(ARGV[1], accts, amts, ARGV[2])
`)

// closeScript closes an escrow, refunding what is left in it.
// KEYS: bal, tx, closed, seq, history of the escrow, history of the client.
// ARGV: escrow, client, refund transaction id, tail (JSON txTail).
// Replies {'ALREADY_CLOSED'}, or post's reply followed by the escrow's
// balance: {'OK', balance} when closed.
var closeScript = redis.NewScript(luaLib + `
local escrow, client, id, tail = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
if redis.call('SISMEMBER', KEYS[3], escrow) == 1 then return {'ALREADY_CLOSED'} end
local raw = redis.call('HGET', KEYS[1], escrow) or '0'
local h, l = parse(raw)
if not h then return {'CORRUPT', 'balance of ' .. escrow .. ' is ' .. raw, '0'} end
local bal = format(h, l)
if h > 0 or (h == 0 and l > 0) then
  local r = post(id, {escrow, client}, {'-' .. bal, bal}, tail)
  if r[1] ~= 'OK' then
    table.insert(r, bal)
    return r
  end
end
redis.call('SADD', KEYS[3], escrow)
return {'OK', bal}
`)
