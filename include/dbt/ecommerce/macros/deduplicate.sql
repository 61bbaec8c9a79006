{# One row per `partition_by` key, the first by `order_by`. Raw tables are already keyed by
   the loader's merge; staging still de-duplicates so that a loader bug cannot fan out the marts. #}
{% macro deduplicate(relation, partition_by, order_by) -%}
    select *
    from (
        select
            _candidates.*,
            row_number() over (partition by {{ partition_by }} order by {{ order_by }}) as _row_rank
        from {{ relation }} as _candidates
    ) as _ranked
    where _row_rank = 1
{%- endmacro %}
