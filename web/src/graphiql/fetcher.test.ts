import { describe, expect, it } from 'vitest';
import { isSubscription, withToken } from './fetcher';

describe('withToken', () => {
  const token = async () => 'session-token';

  it("adds the dashboard's token when the headers carry none", async () => {
    expect(await withToken({ 'x-trace': '1' }, token)).toEqual({ 'x-trace': '1', Authorization: 'Bearer session-token' });
    expect(await withToken(undefined, token)).toEqual({ Authorization: 'Bearer session-token' });
  });

  it('leaves an Authorization header from the editor alone, in any case', async () => {
    let asked = false;
    const spy = async () => {
      asked = true;
      return 'session-token';
    };
    expect(await withToken({ authorization: 'Bearer frt_key' }, spy)).toEqual({ authorization: 'Bearer frt_key' });
    expect(await withToken({ AUTHORIZATION: 'Bearer frt_key' }, spy)).toEqual({ AUTHORIZATION: 'Bearer frt_key' });
    expect(asked).toBe(false);
  });

  it('sends nothing extra when not signed in', async () => {
    expect(await withToken({}, async () => null)).toEqual({});
  });
});

describe('isSubscription', () => {
  it('knows anonymous and named subscriptions', () => {
    expect(isSubscription({ query: 'subscription { events { id } }' })).toBe(true);
    expect(isSubscription({ query: 'subscription Live { events { id } }', operationName: 'Live' })).toBe(true);
  });

  it('picks the operation GraphiQL runs in a document with several', () => {
    const query = 'query Q { me { permission } } subscription S { events { id } }';
    expect(isSubscription({ query, operationName: 'Q' })).toBe(false);
    expect(isSubscription({ query, operationName: 'S' })).toBe(true);
  });

  it('sends queries, mutations and broken documents over HTTP', () => {
    expect(isSubscription({ query: '{ me { permission } }' })).toBe(false);
    expect(isSubscription({ query: 'mutation { logout(refreshToken: "x") }' })).toBe(false);
    expect(isSubscription({ query: 'subscription {' })).toBe(false);
    expect(isSubscription({ query: '{'.repeat(100_000) })).toBe(false);
  });
});
