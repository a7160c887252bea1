// What a client tool sees when it introspects the running server (GraphiQL,
// GraphQL Code Generator, Apollo's and urql's schema-aware caches) is what
// `schema.graphql` says, read by graphql-js — the reference implementation
// those tools build on: the same types, fields, arguments, defaults,
// deprecations, `@specifiedBy` URLs and descriptions, and no schema
// description the file lacks. And every element a client can name has a
// description written for a client.

import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { after, before, test } from 'node:test';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  buildClientSchema,
  buildSchema,
  getIntrospectionQuery,
  introspectionFromSchema,
  isEnumType,
  isInputObjectType,
  isInterfaceType,
  isObjectType,
  isSpecifiedScalarType,
  printSchema,
  specifiedDirectives,
  specifiedScalarTypes,
} from 'graphql';
import { ADMIN_PASSWORD, Server } from './harness.mjs';

const sdl = readFileSync(join(dirname(fileURLToPath(import.meta.url)), '../../schema.graphql'), 'utf8');
// Everything graphql-js can ask of a server, newest options included.
const options = {
  descriptions: true,
  specifiedByUrl: true,
  directiveIsRepeatable: true,
  schemaDescription: true,
  inputValueDeprecation: true,
  oneOf: true,
};

let server;
let introspected;

before(async () => {
  server = await Server.start();
  const token = await server.login('admin', ADMIN_PASSWORD);
  introspected = await server.gql(token, getIntrospectionQuery(options));
});

after(async () => {
  await server?.cleanup();
});

/**
 * The introspection result with every list in name order, so only content
 * is compared, and without what belongs to GraphQL itself rather than to
 * Ferrite (the `__` meta-types, the built-in scalars and directives, which each
 * implementation describes in its own words).
 */
function canonical(result) {
  const builtIn = new Set(specifiedDirectives.map((directive) => directive.name));
  const builtInScalars = new Set(specifiedScalarTypes.map((scalar) => scalar.name));
  result = {
    __schema: {
      ...result.__schema,
      types: result.__schema.types.filter((type) => !type.name.startsWith('__') && !builtInScalars.has(type.name)),
      directives: result.__schema.directives.filter((directive) => !builtIn.has(directive.name)),
    },
  };
  const byName = (a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0);
  return JSON.parse(JSON.stringify(result), (key, value) => {
    if (Array.isArray(value) && value.every((item) => item && typeof item === 'object' && 'name' in item)) {
      return [...value].sort(byName);
    }
    return value;
  });
}

test('the introspected schema prints as schema.graphql does', () => {
  assert.equal(printSchema(buildClientSchema(introspected)), printSchema(buildSchema(sdl)));
});

test('introspection answers what graphql-js derives from schema.graphql, field by field', () => {
  const fromFile = introspectionFromSchema(buildSchema(sdl), options);
  assert.deepEqual(canonical(introspected), canonical(fromFile));
  assert.equal(introspected.__schema.description, null, 'the schema has no description');
  const dateTime = introspected.__schema.types.find((type) => type.name === 'DateTime');
  assert.equal(dateTime.specifiedByURL, 'https://datatracker.ietf.org/doc/html/rfc3339');
});

test('every type, field, argument and enum value a client can name is described', () => {
  const schema = buildSchema(sdl);
  const undescribed = [];
  for (const type of Object.values(schema.getTypeMap())) {
    if (type.name.startsWith('__') || isSpecifiedScalarType(type)) continue;
    if (!type.description?.trim()) undescribed.push(`type ${type.name}`);
    if (isObjectType(type) || isInterfaceType(type) || isInputObjectType(type)) {
      for (const field of Object.values(type.getFields())) {
        if (!field.description?.trim()) undescribed.push(`${type.name}.${field.name}`);
        for (const arg of field.args ?? []) {
          if (!arg.description?.trim()) undescribed.push(`${type.name}.${field.name}(${arg.name})`);
        }
      }
    }
    if (isEnumType(type)) {
      for (const value of type.getValues()) {
        if (!value.description?.trim()) undescribed.push(`${type.name}.${value.name}`);
      }
    }
    // Descriptions are for clients: no Rust type may show through.
    if (/\b(Utc|Option<|Vec<|impl )/.test(type.description ?? '')) undescribed.push(`${type.name} (names a Rust type)`);
  }
  assert.deepEqual(undescribed, []);
});
