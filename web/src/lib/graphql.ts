// GraphQL over HTTP with plain fetch: queries and mutations. Errors keep the
// server's message and `extensions.code`, which the pages show as they are.

/** An error as the server reported it (or as the network failed). */
export class ApiError extends Error {
  readonly code: string;
  readonly extensions: Record<string, unknown>;
  constructor(message: string, code: string, extensions: Record<string, unknown> = {}) {
    super(message);
    this.name = 'ApiError';
    this.code = code;
    this.extensions = extensions;
  }
}

interface WireError {
  message?: string;
  extensions?: Record<string, unknown>;
}

/** The first error of a GraphQL response body as an ApiError. */
export function errorOf(body: { errors?: WireError[] } | null | undefined, fallback: string): ApiError {
  const first = body?.errors?.[0];
  const extensions = first?.extensions ?? {};
  const code = typeof extensions.code === 'string' ? extensions.code : 'UNKNOWN';
  return new ApiError(first?.message ?? fallback, code, extensions);
}

/** Where tokens come from: the session module, or a test. */
export interface TokenSource {
  /** A valid access token, refreshed first when it is about to expire. */
  token(): Promise<string | null>;
  /** The server said the token is not valid: refresh (once) or sign out. */
  rejected(): Promise<string | null>;
}

let tokens: TokenSource = { token: async () => null, rejected: async () => null };

export function useTokens(source: TokenSource): void {
  tokens = source;
}

async function post(query: string, variables: object | undefined, token: string | null): Promise<Response> {
  const headers: Record<string, string> = { 'content-type': 'application/json' };
  if (token) headers.authorization = `Bearer ${token}`;
  try {
    return await fetch('/graphql', {
      method: 'POST',
      headers,
      body: JSON.stringify({ query, variables }),
    });
  } catch {
    throw new ApiError('the server cannot be reached', 'NETWORK');
  }
}

/** Runs a query or mutation; resolves with `data`, rejects with ApiError. */
export async function gql<T>(query: string, variables?: object): Promise<T> {
  let response = await post(query, variables, await tokens.token());
  if (response.status === 401) {
    const token = await tokens.rejected();
    if (token) response = await post(query, variables, token);
  }
  let body: { data?: T; errors?: WireError[] };
  try {
    body = await response.json();
  } catch {
    throw new ApiError(`the server answered ${response.status} without a GraphQL body`, 'NETWORK');
  }
  if (body.errors?.length) throw errorOf(body, 'request failed');
  if (body.data === undefined) throw new ApiError('the response has no data', 'UNKNOWN');
  return body.data;
}

interface Connection<T> {
  nodes: T[];
  pageInfo: { hasNextPage: boolean; endCursor: string | null };
}

/**
 * Every node of a connection, page after page: `query` takes `$after:
 * String` and has one root field, `field`, selecting `nodes` and
 * `pageInfo { hasNextPage endCursor }`. Stops after `limit` nodes;
 * `onPage` sees each page as it arrives.
 */
export async function allPages<T>(
  query: string,
  field: string,
  variables: object = {},
  limit = Infinity,
  onPage?: (nodes: T[]) => void,
): Promise<T[]> {
  const nodes: T[] = [];
  let after: string | null = null;
  while (nodes.length < limit) {
    const data: Record<string, Connection<T>> = await gql(query, { ...variables, after });
    const page = data[field];
    nodes.push(...page.nodes);
    onPage?.(page.nodes);
    if (!page.pageInfo.hasNextPage) break;
    after = page.pageInfo.endCursor;
  }
  return nodes;
}
