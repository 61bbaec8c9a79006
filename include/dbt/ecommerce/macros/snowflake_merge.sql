{#-
  dbt-snowflake's get_merge_sql with one change: the MERGE's `when not matched then insert ...
  values (...)` names the source's columns qualified (DBT_INTERNAL_SOURCE."COL") instead of bare.

  Why: fakesnow (the local Snowflake) evaluates the VALUES list over the joined source and target,
  so bare names are ambiguous there ("Ambiguous reference to column name ... use
  DBT_INTERNAL_DEST.X or DBT_INTERNAL_SOURCE.X") and every incremental merge fails. Snowflake
  itself resolves bare names to the source and accepts the qualified ones alike (its own MERGE
  examples qualify them), so the statement means the same on both.

  And the statement runs on its own, not inside dbt-snowflake's `begin; ...; commit;`: it is one
  statement, which Snowflake runs atomically in autocommit mode anyway (dbt-snowflake returns it
  unwrapped itself for catalog-linked databases). Why: fakesnow runs a MERGE as several DuckDB
  statements: a CREATE TABLE of its merge candidates (in the target's database) that it then
  records in its own `_fs_global` database, the UPDATE, the INSERT. Inside one explicit transaction
  DuckDB refuses the second database ("a single transaction can only write to a single attached
  database"), so every incremental run after the first failed on the local Snowflake.
-#}
{% macro snowflake__get_merge_sql(target, source_sql, unique_key, dest_columns, incremental_predicates) -%}
    {%- set dest_cols_csv = get_quoted_csv(dest_columns | map(attribute='name')) -%}
    {%- set sql_header = config.get('sql_header', none) -%}

    {%- set dml -%}
    {%- if unique_key is none -%}
        {{ sql_header if sql_header is not none }}
        insert into {{ target }} ({{ dest_cols_csv }})
        (
            select {{ dest_cols_csv }}
            from {{ source_sql }}
        )
    {%- else -%}
        {%- set merge = default__get_merge_sql(target, source_sql, unique_key, dest_columns, incremental_predicates) | trim -%}
        {%- set qualified = [] -%}
        {%- for column in dest_cols_csv.split(', ') -%}
            {%- do qualified.append('DBT_INTERNAL_SOURCE.' ~ column) -%}
        {%- endfor -%}
        {%- set pattern = 'values\\s*\\(' ~ modules.re.escape(dest_cols_csv) ~ '\\)$' -%}
        {%- set rewritten = modules.re.sub(pattern, 'values (' ~ (qualified | join(', ')) ~ ')', merge) -%}
        {%- if rewritten == merge -%}
            {% do exceptions.raise_compiler_error("snowflake__get_merge_sql: dbt's MERGE no longer ends with the insert VALUES list this override qualifies; review macros/snowflake_merge.sql against the installed dbt-core") %}
        {%- endif -%}
        {{ rewritten }}
    {%- endif -%}
    {%- endset -%}

    {% do return(dml) %}
{% endmacro %}
