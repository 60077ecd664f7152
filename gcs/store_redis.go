package gcs

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strconv"

	"github.com/redis/go-redis/v9"
)

// RedisStore is a Store in a Redis database, under keys that start with a
// per-cluster prefix ("gray:gcs:{NAMESPACE}:"):
//
//	<prefix>meta      hash: "version" → schemaVersion
//	<prefix>v:<table> hash: key → value
//	<prefix>k:<table> sorted set of the keys, all scored 0 (ordered scans)
//
// Every change is one Lua script (applyScript), which Redis runs
// atomically: a batch is applied whole or not at all, and no other client
// sees half of it. Heads in several processes may share one database and
// namespace. Durability is the server's (its appendonly and appendfsync
// settings); a write is acknowledged once the server has applied it.
type RedisStore struct {
	c      *redis.Client
	prefix string
	where  string
}

// DefaultRedisNamespace is the namespace of a URL that names none.
const DefaultRedisNamespace = "default"

// OpenRedisStore opens the store in the Redis database at rawURL (as
// redis.ParseURL reads it: "redis://[user:password@]host:port/db", with
// go-redis's options such as dial_timeout), plus gray's own query option
// namespace=NAME, which picks the cluster's key prefix (default
// "default"). ctx bounds the connection and schema check.
func OpenRedisStore(ctx context.Context, rawURL string) (*RedisStore, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		var ue *url.Error // it quotes the URL, which may hold a password
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return nil, fmt.Errorf("gcs store: bad redis url: %w", err)
	}
	q := u.Query()
	ns := q.Get("namespace")
	if ns == "" {
		ns = DefaultRedisNamespace
	}
	q.Del("namespace")
	u.RawQuery = q.Encode()
	opt, err := redis.ParseURL(u.String())
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return nil, fmt.Errorf("gcs store: bad redis url: %w", err)
	}
	prefix := "gray:gcs:{" + ns + "}:"
	s := &RedisStore{c: redis.NewClient(opt), prefix: prefix,
		where: fmt.Sprintf("redis %s db %d prefix %s", opt.Addr, opt.DB, prefix)}
	if err := s.checkSchema(ctx); err != nil {
		s.c.Close()
		return nil, fmt.Errorf("gcs store: open %s: %w", s.where, err)
	}
	return s, nil
}

func (s *RedisStore) checkSchema(ctx context.Context) error {
	meta := s.prefix + "meta"
	set, err := s.c.HSetNX(ctx, meta, "version", schemaVersion).Result()
	if err != nil {
		return redisErr(err)
	}
	if set {
		return nil
	}
	v, err := s.c.HGet(ctx, meta, "version").Result()
	if err != nil {
		return redisErr(err)
	}
	if v != schemaVersion {
		return fmt.Errorf("%w: schema version %q, want %q", ErrCorrupt, v, schemaVersion)
	}
	return nil
}

func redisErr(err error) error {
	if redis.HasErrorPrefix(err, "WRONGTYPE") || redis.HasErrorPrefix(err, "GRAYCORRUPT") {
		return fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	return fmt.Errorf("gcs store: redis: %w", err)
}

func (s *RedisStore) valuesKey(table string) string { return s.prefix + "v:" + table }
func (s *RedisStore) keysKey(table string) string   { return s.prefix + "k:" + table }

// Describe implements Store.
func (s *RedisStore) Describe() string { return s.where }

// Close implements Store.
func (s *RedisStore) Close() error { return s.c.Close() }

// Get implements Store.
func (s *RedisStore) Get(ctx context.Context, table string, key []byte) ([]byte, bool, error) {
	if err := checkTable(table); err != nil {
		return nil, false, err
	}
	v, err := s.c.HGet(ctx, s.valuesKey(table), string(key)).Result()
	switch {
	case errors.Is(err, redis.Nil):
		return nil, false, nil
	case err != nil:
		return nil, false, redisErr(err)
	}
	return []byte(v), true, nil
}

// lexRange is the ZRANGEBYLEX bounds of the keys that start with prefix.
func lexRange(prefix []byte) (lo, hi string) {
	if len(prefix) == 0 {
		return "-", "+"
	}
	lo = "[" + string(prefix)
	// The least string above every one with the prefix: drop trailing 0xff
	// bytes and increment the last byte left.
	end := []byte(string(prefix))
	for len(end) > 0 && end[len(end)-1] == 0xff {
		end = end[:len(end)-1]
	}
	if len(end) == 0 {
		return lo, "+"
	}
	end[len(end)-1]++
	return lo, "(" + string(end)
}

// Keys implements Store.
func (s *RedisStore) Keys(ctx context.Context, table string, prefix []byte) ([][]byte, error) {
	if err := checkTable(table); err != nil {
		return nil, err
	}
	lo, hi := lexRange(prefix)
	keys, err := s.c.ZRangeByLex(ctx, s.keysKey(table), &redis.ZRangeBy{Min: lo, Max: hi}).Result()
	if err != nil {
		return nil, redisErr(err)
	}
	out := make([][]byte, len(keys))
	for i, k := range keys {
		out[i] = []byte(k)
	}
	return out, nil
}

// scanPage is how many entries one scanScript call returns.
const scanPage = 128

// Scan implements Store. Each page of entries is read atomically, but not
// the whole scan: a change committed during it may be seen in part.
func (s *RedisStore) Scan(ctx context.Context, table string, prefix []byte, fn func(key, value []byte) error) error {
	if err := checkTable(table); err != nil {
		return err
	}
	lo, hi := lexRange(prefix)
	keys := []string{s.valuesKey(table), s.keysKey(table)}
	for {
		page, err := scanScript.Run(ctx, s.c, keys, lo, hi, scanPage).StringSlice()
		if err != nil {
			return redisErr(err)
		}
		for i := 0; i+1 < len(page); i += 2 {
			if err := fn([]byte(page[i]), []byte(page[i+1])); err != nil {
				return err
			}
		}
		if len(page) < 2*scanPage {
			return nil
		}
		lo = "(" + page[len(page)-2]
	}
}

// Apply implements Store. go-redis retries a command after a network error
// (max_retries in the URL); every batch leaves the same tables when applied
// twice in a row, though a retried one may report keys as existing.
func (s *RedisStore) Apply(ctx context.Context, ops ...Op) ([]int, error) {
	if err := checkOps(ops); err != nil {
		return nil, err
	}
	if len(ops) == 0 {
		return []int{}, nil
	}
	index := map[string]int{}
	var keys []string
	args := make([]any, 0, 4*len(ops))
	for _, op := range ops {
		t, ok := index[op.Table]
		if !ok {
			keys = append(keys, s.valuesKey(op.Table), s.keysKey(op.Table))
			t = len(keys) / 2
			index[op.Table] = t
		}
		var kind, key, val string
		switch op.Kind {
		case OpPut:
			kind, key, val = "p", string(op.Key), string(op.Value)
		case OpInsert:
			kind, key, val = "i", string(op.Key), string(op.Value)
		case OpDelete:
			kind, key = "d", string(op.Key)
		case OpDeletePrefix:
			kind = "x"
			key, val = lexRange(op.Key)
		}
		args = append(args, kind, strconv.Itoa(t), key, val)
	}
	res, err := applyScript.Run(ctx, s.c, keys, args...).Int64Slice()
	if err != nil {
		return nil, redisErr(err)
	}
	if len(res) != len(ops) {
		return nil, fmt.Errorf("%w: apply returned %d results for %d ops", ErrCorrupt, len(res), len(ops))
	}
	out := make([]int, len(res))
	for i, r := range res {
		out[i] = int(r)
	}
	return out, nil
}

// applyScript applies a batch. KEYS are pairs (values hash, keys sorted
// set), one per table; ARGV are quadruples (kind, table number, key or low
// bound, value or high bound). It checks every key's type before the first
// write, so that it fails whole or succeeds whole.
var applyScript = redis.NewScript(`
for i = 1, #KEYS, 2 do
  local th = redis.call('TYPE', KEYS[i]).ok
  local tz = redis.call('TYPE', KEYS[i+1]).ok
  if (th ~= 'none' and th ~= 'hash') or (tz ~= 'none' and tz ~= 'zset') then
    return redis.error_reply('GRAYCORRUPT ' .. KEYS[i] .. ' is a ' .. th .. ', ' .. KEYS[i+1] .. ' a ' .. tz)
  end
end
local res = {}
for i = 1, #ARGV, 4 do
  local kind, t, k, v = ARGV[i], tonumber(ARGV[i+1]), ARGV[i+2], ARGV[i+3]
  local h, z = KEYS[2*t-1], KEYS[2*t]
  local r = 0
  if kind == 'p' then
    if redis.call('HSET', h, k, v) == 1 then redis.call('ZADD', z, 0, k) else r = 1 end
  elseif kind == 'i' then
    if redis.call('HSETNX', h, k, v) == 1 then redis.call('ZADD', z, 0, k) else r = 1 end
  elseif kind == 'd' then
    r = redis.call('HDEL', h, k)
    if r == 1 then redis.call('ZREM', z, k) end
  else
    local ks = redis.call('ZRANGEBYLEX', z, k, v)
    for j = 1, #ks, 1000 do
      local chunk = {unpack(ks, j, math.min(j + 999, #ks))}
      redis.call('HDEL', h, unpack(chunk))
      redis.call('ZREM', z, unpack(chunk))
    end
    r = #ks
  end
  res[#res + 1] = r
end
return res
`)

// scanScript returns up to ARGV[3] entries (key, value, key, value...) of
// the table whose keys lie in the lex range ARGV[1]..ARGV[2].
var scanScript = redis.NewScript(`
local ks = redis.call('ZRANGEBYLEX', KEYS[2], ARGV[1], ARGV[2], 'LIMIT', 0, tonumber(ARGV[3]))
local out = {}
for _, k in ipairs(ks) do
  local v = redis.call('HGET', KEYS[1], k)
  if not v then
    return redis.error_reply('GRAYCORRUPT ' .. KEYS[2] .. ' lists a key that ' .. KEYS[1] .. ' lacks')
  end
  out[#out + 1] = k
  out[#out + 1] = v
end
return out
`)
