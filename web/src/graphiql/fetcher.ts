// How GraphiQL's requests are sent: which credential, which transport.

import type { FetcherParams } from '@graphiql/toolkit';
import { getOperationAST, parse } from 'graphql';

/** The Headers editor's headers, plus the dashboard's token when they carry none. */
export async function withToken(
  headers: Record<string, unknown> | undefined,
  token: () => Promise<string | null>,
): Promise<Record<string, unknown>> {
  const given = headers ?? {};
  if (Object.keys(given).some((name) => name.toLowerCase() === 'authorization')) return given;
  const access = await token();
  return access ? { ...given, Authorization: `Bearer ${access}` } : given;
}

/** Whether the operation GraphiQL runs is a subscription (anonymous ones too). */
export function isSubscription(params: FetcherParams): boolean {
  try {
    return getOperationAST(parse(params.query), params.operationName ?? undefined)?.operation === 'subscription';
  } catch {
    return false; // the server reports the syntax error
  }
}

