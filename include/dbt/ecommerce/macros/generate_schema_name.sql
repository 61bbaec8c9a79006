{#
  The warehouse layout is fixed by the data contract: schemas `staging`, `intermediate` and `marts`
  on every warehouse and every target. dbt's default would prefix them with the target schema
  (`raw_staging`), so a model's configured schema is used verbatim; models without one land in
  the target's schema.
#}
{% macro generate_schema_name(custom_schema_name, node) -%}
    {%- if custom_schema_name is none -%}
        {{ target.schema | trim }}
    {%- else -%}
        {{ custom_schema_name | trim }}
    {%- endif -%}
{%- endmacro %}
