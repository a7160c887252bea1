// What every form of the dashboard does on submit: read its fields, run one
// action, then clear the form and the error, or show the server's error.

/** A submit handler for a form: `action` gets its fields. */
export function onSubmit(action: (fields: FormData) => Promise<void>, setError: (error: unknown) => void) {
  return async (event: Event) => {
    event.preventDefault();
    const form = event.currentTarget as HTMLFormElement;
    try {
      await action(new FormData(form));
      setError(null);
      form.reset();
    } catch (error) {
      setError(error);
    }
  };
}

/** A field of a submitted form as a string ('' when missing). */
export function field(fields: FormData, name: string): string {
  return String(fields.get(name) ?? '');
}
