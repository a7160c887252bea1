// A signed-in user's tokens, kept fresh, and GraphQL over fetch.
//
// `login` gives a short-lived access token (a JWT, 15 minutes by default)
// and a refresh token that works once; `refresh` trades the latter for a new
// pair. `accessToken()` answers with a token that is good for at least
// another 30 s, refreshing (or signing in again) when it is not: pass it as
// graphql-ws's `connectionParams` *function*, so a reconnect after an hour
// offline presents a fresh token instead of the one the socket opened with.

export interface Tokens {
  accessToken: string;
  refreshToken: string;
  expiresAt: string;
}

/** A GraphQL error as Ferrite sends it: every one has `extensions.code`. */
export interface GraphQLError {
  message: string;
  extensions?: { code?: string; [key: string]: unknown };
}

export class GraphQLRequestError extends Error {
  constructor(readonly errors: GraphQLError[]) {
    super(errors.map((e) => `${e.extensions?.code ?? 'ERROR'}: ${e.message}`).join('; '));
  }
  get code(): string | undefined {
    return this.errors[0]?.extensions?.code;
  }
}

const TOKENS = 'accessToken refreshToken expiresAt';

export class Session {
  private tokens: Tokens | null = null;

  constructor(
    /** The server, e.g. `http://127.0.0.1:8080`. */
    readonly origin: string,
    private readonly username: string,
    private readonly password: string,
  ) {}

  /** The WebSocket URL of the same server. */
  get socketUrl(): string {
    return `${this.origin.replace(/^http/, 'ws')}/graphql`;
  }

  /** One GraphQL request over HTTP; throws on errors. */
  async graphql<T>(query: string, variables: Record<string, unknown> = {}, token?: string): Promise<T> {
    const response = await fetch(`${this.origin}/graphql`, {
      method: 'POST',
      headers: {
        'content-type': 'application/json',
        ...(token ? { authorization: `Bearer ${token}` } : {}),
      },
      body: JSON.stringify({ query, variables }),
    });
    const body = (await response.json()) as { data?: T; errors?: GraphQLError[] };
    if (body.errors?.length) throw new GraphQLRequestError(body.errors);
    return body.data as T;
  }

  /** An access token valid for at least 30 s more. */
  async accessToken(): Promise<string> {
    const soon = Date.now() + 30_000;
    if (this.tokens && Date.parse(this.tokens.expiresAt) > soon) return this.tokens.accessToken;
    if (this.tokens) {
      try {
        const { refresh } = await this.graphql<{ refresh: Tokens }>(
          `mutation($t: String!) { refresh(refreshToken: $t) { ${TOKENS} } }`,
          { t: this.tokens.refreshToken },
        );
        this.tokens = refresh;
        return refresh.accessToken;
      } catch (error) {
        // A refresh token is refused after a password change or a revoked
        // session: sign in again (and fail loudly if that is refused too).
        if (!(error instanceof GraphQLRequestError)) throw error;
        console.error(`ferrite: refresh refused (${error.message}); signing in again`);
      }
    }
    const { login } = await this.graphql<{ login: Tokens }>(
      `mutation($u: String!, $p: String!) { login(username: $u, password: $p) { ${TOKENS} } }`,
      { u: this.username, p: this.password },
    );
    this.tokens = login;
    return login.accessToken;
  }
}
