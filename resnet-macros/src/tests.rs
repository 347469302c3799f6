//! Front-end tests on proc_macro2 token streams.
