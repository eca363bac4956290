


SET statement_timeout = 0;
SET lock_timeout = 0;
SET idle_in_transaction_session_timeout = 0;
SET client_encoding = 'UTF8';
SET standard_conforming_strings = on;
SELECT pg_catalog.set_config('search_path', '', false);
SET check_function_bodies = false;
SET xmloption = content;
SET client_min_messages = warning;
SET row_security = off;


CREATE SCHEMA walpipe;


SET default_tablespace = '';

SET default_table_access_method = heap;


CREATE TABLE walpipe.checkpoints (
    job_name text NOT NULL,
    slot_name text NOT NULL,
    applied_lsn pg_lsn NOT NULL,
    updated_at timestamp with time zone DEFAULT now() NOT NULL,
    delivered_through text,
    in_flight jsonb,
    shapes jsonb,
    copy_progress jsonb
);



CREATE TABLE walpipe.data_gaps (
    job_name text NOT NULL,
    slot_name text NOT NULL,
    gap_from pg_lsn,
    detected_at timestamp with time zone DEFAULT now() NOT NULL
);



CREATE TABLE walpipe.job_instances (
    id bigint NOT NULL,
    job_name text NOT NULL,
    worker_id text NOT NULL,
    started_at timestamp with time zone DEFAULT now() NOT NULL,
    ended_at timestamp with time zone,
    status text DEFAULT 'running'::text NOT NULL,
    records bigint DEFAULT 0 NOT NULL,
    bytes bigint DEFAULT 0 NOT NULL,
    error text
);



CREATE SEQUENCE walpipe.job_instances_id_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;



ALTER SEQUENCE walpipe.job_instances_id_seq OWNED BY walpipe.job_instances.id;



CREATE TABLE walpipe.jobs (
    name text NOT NULL,
    definition jsonb NOT NULL,
    from_environment boolean DEFAULT false NOT NULL,
    state text DEFAULT 'created'::text NOT NULL,
    phase text,
    error text,
    worker_id text,
    lease_until timestamp with time zone,
    reset_requested boolean DEFAULT false NOT NULL,
    cleanup_requested boolean DEFAULT false NOT NULL,
    status jsonb DEFAULT '{}'::jsonb NOT NULL,
    checkpoint_lsn text,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    updated_at timestamp with time zone DEFAULT now() NOT NULL,
    requested text,
    revision bigint DEFAULT 0 NOT NULL,
    copy_requests jsonb DEFAULT '{}'::jsonb NOT NULL
);



CREATE TABLE walpipe.partition_leaves (
    job_name text NOT NULL,
    root_schema text NOT NULL,
    root_name text NOT NULL,
    leaves text[] NOT NULL
);



CREATE SEQUENCE walpipe.recopy_marks
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;



CREATE TABLE walpipe.recopy_needed (
    job_name text NOT NULL,
    source_table text NOT NULL,
    reason text NOT NULL,
    since timestamp with time zone DEFAULT now() NOT NULL,
    mark bigint DEFAULT nextval('walpipe.recopy_marks'::regclass) NOT NULL,
    isolated boolean DEFAULT false NOT NULL,
    waits_for_request boolean DEFAULT false NOT NULL
);



CREATE TABLE walpipe.schema_migrations (
    version integer NOT NULL,
    applied_at timestamp with time zone DEFAULT now() NOT NULL
);



CREATE TABLE walpipe.source_columns (
    job_name text NOT NULL,
    source_table text NOT NULL,
    column_name text NOT NULL,
    attnum smallint NOT NULL
);



CREATE TABLE walpipe.source_tables (
    job_name text NOT NULL,
    source_table text NOT NULL,
    relid oid NOT NULL
);



CREATE TABLE walpipe.workers (
    id text NOT NULL,
    host text NOT NULL,
    pid integer NOT NULL,
    started_at timestamp with time zone DEFAULT now() NOT NULL,
    heartbeat_at timestamp with time zone DEFAULT now() NOT NULL
);



ALTER TABLE ONLY walpipe.job_instances ALTER COLUMN id SET DEFAULT nextval('walpipe.job_instances_id_seq'::regclass);



ALTER TABLE ONLY walpipe.checkpoints
    ADD CONSTRAINT checkpoints_pkey PRIMARY KEY (job_name);



ALTER TABLE ONLY walpipe.job_instances
    ADD CONSTRAINT job_instances_pkey PRIMARY KEY (id);



ALTER TABLE ONLY walpipe.jobs
    ADD CONSTRAINT jobs_pkey PRIMARY KEY (name);



ALTER TABLE ONLY walpipe.partition_leaves
    ADD CONSTRAINT partition_leaves_pkey PRIMARY KEY (job_name, root_schema, root_name);



ALTER TABLE ONLY walpipe.recopy_needed
    ADD CONSTRAINT recopy_needed_pkey PRIMARY KEY (job_name, source_table);



ALTER TABLE ONLY walpipe.schema_migrations
    ADD CONSTRAINT schema_migrations_pkey PRIMARY KEY (version);



ALTER TABLE ONLY walpipe.source_columns
    ADD CONSTRAINT source_columns_pkey PRIMARY KEY (job_name, source_table, column_name);



ALTER TABLE ONLY walpipe.source_tables
    ADD CONSTRAINT source_tables_pkey PRIMARY KEY (job_name, source_table);



ALTER TABLE ONLY walpipe.workers
    ADD CONSTRAINT workers_pkey PRIMARY KEY (id);



CREATE INDEX job_instances_job_name_id_idx ON walpipe.job_instances USING btree (job_name, id);



ALTER TABLE ONLY walpipe.job_instances
    ADD CONSTRAINT job_instances_job_name_fkey FOREIGN KEY (job_name) REFERENCES walpipe.jobs(name) ON DELETE CASCADE;




